-- 0008: abnormal-fund audit. audit_abnormal_stuck measures how long an instruction has been in
-- its state from the append-only abnormal_log (its record, answers that changed the state, a
-- rejection), not from updated_at, which every attempt, error and poll moves: an instruction
-- retried or polled for days without moving was never reported. audit_abnormal_contradicted
-- reports WeChat answering for an instruction the ledger holds REJECTED. Never edit this file
-- once shipped.

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

-- audit_abnormal_contradicted: WeChat answered with a state (a query or a callback) for an
-- instruction the ledger holds REJECTED, that is, took WeChat to hold no instruction of that
-- number. Nothing was changed: the two disagree about money that may have moved. Ask WeChat
-- Pay. Apply logs each such answer as an 'error' row whose detail starts "contradicted: ".
CREATE VIEW audit_abnormal_contradicted AS
SELECT printf('abnormal_instructions id=%d receipt_id=%s out_instruction_no=%s', i.id, i.receipt_id, i.out_instruction_no) AS row,
       printf('REJECTED here; %d answers from WeChat say otherwise, the last at %s: %s', l.n,
              strftime('%Y-%m-%dT%H:%M:%SZ', l.at / 1000, 'unixepoch'), l.detail) AS detail
FROM abnormal_instructions i
JOIN (SELECT instruction, count(*) AS n, max(at) AS at, max(detail) AS detail FROM abnormal_log
      WHERE kind = 'error' AND detail LIKE 'contradicted: %' GROUP BY instruction) l ON l.instruction = i.id
WHERE i.state = 'REJECTED';
