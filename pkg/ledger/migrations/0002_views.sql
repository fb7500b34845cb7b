-- 0002: views. audit_* views are invariants: each is empty when the ledger is healthy and
-- otherwise names the offending row ("row") and what is wrong ("detail"). The others are
-- for auditors working directly in sqlite3. Never edit this file once shipped.

CREATE VIEW audit_batch_totals AS
SELECT 'batches out_batch_no=' || b.out_batch_no AS row,
       printf('total_amount=%d total_num=%d but members sum to %d in %d rows',
              b.total_amount, b.total_num, coalesce(m.amount, 0), coalesce(m.num, 0)) AS detail
FROM batches b
LEFT JOIN (SELECT out_batch_no, sum(amount) AS amount, count(*) AS num
           FROM payouts WHERE out_batch_no IS NOT NULL GROUP BY out_batch_no) m
       ON m.out_batch_no = b.out_batch_no
WHERE b.total_amount != coalesce(m.amount, 0) OR b.total_num != coalesce(m.num, 0);

CREATE VIEW audit_batch_cap AS
SELECT 'batches out_batch_no=' || out_batch_no AS row,
       printf('total_num=%d over the %s cap %d', total_num, rail,
              CASE rail WHEN 'direct' THEN 1000 ELSE 3000 END) AS detail
FROM batches
WHERE total_num > CASE rail WHEN 'direct' THEN 1000 ELSE 3000 END;

CREATE VIEW audit_settled_sums AS
SELECT 'batches out_batch_no=' || b.out_batch_no AS row,
       printf('success %d fen/%d, fail %d fen/%d but details say success %d fen/%d, fail %d fen/%d',
              b.success_amount, b.success_num, b.fail_amount, b.fail_num,
              m.s_amount, m.s_num, m.f_amount, m.f_num) AS detail
FROM batches b
JOIN (SELECT out_batch_no,
             coalesce(sum(CASE state WHEN 'SUCCESS' THEN amount END), 0) AS s_amount,
             count(CASE state WHEN 'SUCCESS' THEN 1 END) AS s_num,
             coalesce(sum(CASE state WHEN 'FAIL' THEN amount END), 0) AS f_amount,
             count(CASE state WHEN 'FAIL' THEN 1 END) AS f_num
      FROM payouts WHERE out_batch_no IS NOT NULL GROUP BY out_batch_no) m
  ON m.out_batch_no = b.out_batch_no
WHERE b.state = 'FINISHED' AND b.settled = 1
  AND (b.success_amount != m.s_amount OR b.success_num != m.s_num
       OR b.fail_amount != m.f_amount OR b.fail_num != m.f_num);

CREATE VIEW audit_member_states AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('state %s with batch %s (batch state %s, settled %d)', p.state,
              coalesce(p.out_batch_no, 'none'), coalesce(b.state, 'none'), coalesce(b.settled, 0)) AS detail
FROM payouts p
LEFT JOIN batches b ON b.out_batch_no = p.out_batch_no
WHERE (p.out_batch_no IS NULL) != (p.state IN ('RECEIVED', 'CLAIMED', 'DUPLICATE'))
   OR (b.state = 'REJECTED' AND p.state != 'REJECTED')
   OR (b.state != 'REJECTED' AND p.state = 'REJECTED')
   OR (b.settled = 1 AND p.state NOT IN ('SUCCESS', 'FAIL', 'REJECTED'));

CREATE VIEW audit_duplicate_keys AS
SELECT 'payouts out_detail_no=' || out_detail_no AS row,
       printf('stored %d times (seqs %s)', count(*), group_concat(seq)) AS detail
FROM payouts
GROUP BY key_hash, out_detail_no
HAVING count(*) > 1;

CREATE VIEW audit_outcomes AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('state %s but outbox has %s', p.state, coalesce(o.state, 'no row')) AS detail
FROM payouts p
LEFT JOIN outcomes o ON o.seq = p.seq
WHERE (p.state IN ('DUPLICATE', 'SUCCESS', 'FAIL', 'REJECTED')) != (o.seq IS NOT NULL)
   OR o.state != p.state;

-- batch_summary: one row per batch with its members' totals by outcome.
CREATE VIEW batch_summary AS
SELECT b.out_batch_no, b.rail, b.mchid, b.state, b.batch_id, b.total_num, b.total_amount,
       b.success_num, b.success_amount, b.fail_num, b.fail_amount, b.close_reason,
       b.attempts, b.last_error_code, b.settled,
       count(p.seq) AS members,
       coalesce(sum(CASE WHEN p.state = 'SUCCESS' THEN p.amount END), 0) AS members_success_amount,
       coalesce(sum(CASE WHEN p.state = 'FAIL' THEN p.amount END), 0) AS members_fail_amount,
       count(CASE WHEN p.state NOT IN ('SUCCESS', 'FAIL', 'REJECTED') THEN 1 END) AS members_open,
       datetime(b.sealed_at / 1000, 'unixepoch') AS sealed_at,
       datetime(b.updated_at / 1000, 'unixepoch') AS updated_at,
       datetime(b.next_at / 1000, 'unixepoch') AS next_at
FROM batches b
LEFT JOIN payouts p ON p.out_batch_no = b.out_batch_no
GROUP BY b.out_batch_no;

-- payouts_by_state: counts and amounts (fen) per payout state.
CREATE VIEW payouts_by_state AS
SELECT state, count(*) AS payouts, sum(amount) AS amount
FROM payouts GROUP BY state;

-- details: every payout with readable times (no openid, no name cipher).
CREATE VIEW details AS
SELECT seq, out_detail_no, mchid, rail, amount, state, out_batch_no, batch_pos, detail_id,
       fail_reason, stream_seq,
       datetime(received_at / 1000, 'unixepoch') AS received_at,
       datetime(updated_at / 1000, 'unixepoch') AS updated_at
FROM payouts;
