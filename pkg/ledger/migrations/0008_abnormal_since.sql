-- 0008: audit_abnormal_stuck measures how long an instruction has been in its state from the
-- append-only abnormal_log (its record, answers that changed the state, a rejection), not from
-- updated_at, which every attempt, error and poll moves: an instruction retried or polled for
-- days without moving was never reported. Never edit this file once shipped.

DROP VIEW audit_abnormal_stuck;

-- audit_abnormal_stuck: an instruction nothing finished. RECORDED for over an hour was never
-- acknowledged by WeChat (never sent, or its answers lost): `processor abnormal-fund resume`
-- continues it. PENDING or PROGRESS for over 7 days: WeChat has not completed it (the payee has
-- not collected; how long WeChat waits is not documented): ask WeChat Pay.
CREATE VIEW audit_abnormal_stuck AS
WITH since AS (
	SELECT instruction, max(at) AS at FROM abnormal_log WHERE kind IN ('record', 'answer', 'reject') GROUP BY instruction
),
open AS (
	SELECT i.*, coalesce(s.at, i.created_at) AS state_at
	FROM abnormal_instructions i LEFT JOIN since s ON s.instruction = i.id
	WHERE i.state IN ('RECORDED', 'RECEIPT_STATE_PENDING', 'RECEIPT_STATE_PROGRESS')
)
SELECT printf('abnormal_instructions id=%d receipt_id=%s out_instruction_no=%s', id, receipt_id, out_instruction_no) AS row,
       printf('%s since %s after %d attempts%s', state, strftime('%Y-%m-%dT%H:%M:%SZ', state_at / 1000, 'unixepoch'), attempts,
              CASE WHEN last_error != '' THEN ', last error: ' || last_error ELSE '' END) AS detail
FROM open
WHERE (state = 'RECORDED' AND state_at < (CAST(strftime('%s', 'now') AS INTEGER) - 3600) * 1000)
   OR (state != 'RECORDED' AND state_at < (CAST(strftime('%s', 'now') AS INTEGER) - 7 * 86400) * 1000);
