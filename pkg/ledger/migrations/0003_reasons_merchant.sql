-- 0003: audit views for issue 12. Each is empty when the ledger is healthy (see 0002).
-- Never edit this file once shipped.

-- audit_fail_reason: a FAIL payout must say why (WeChat's fail_reason, spec §6), so upstream
-- knows before it pays again under a new number.
CREATE VIEW audit_fail_reason AS
SELECT printf('payouts seq=%d out_detail_no=%s', seq, out_detail_no) AS row,
       'FAIL with an empty fail_reason' AS detail
FROM payouts
WHERE state = 'FAIL' AND fail_reason = '';

-- audit_foreign_merchant: a ledger bound to a merchant (meta key 'mchid', recorded by Open)
-- holds only that merchant's payouts and batches. Unbound ledgers are not checked: the
-- subquery is NULL and so is every comparison with it.
CREATE VIEW audit_foreign_merchant AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('mchid %s in a ledger bound to merchant %s', p.mchid, m.value) AS detail
FROM payouts p JOIN meta m ON m.key = 'mchid'
WHERE p.mchid != m.value
UNION ALL
SELECT 'batches out_batch_no=' || b.out_batch_no AS row,
       printf('mchid %s in a ledger bound to merchant %s', b.mchid, m.value) AS detail
FROM batches b JOIN meta m ON m.key = 'mchid'
WHERE b.mchid != m.value;
