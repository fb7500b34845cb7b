-- 0007: in-transit abnormal-fund instructions (在途异常资金, issue 15, docs/abnormal-funds.md).
-- Never edit this file once shipped.

-- abnormal_instructions: one row per transfer instruction we issue for an abnormal-fund
-- receipt. The row, its out_instruction_no and the exact body bytes are committed before the
-- first send; every attempt sends that body under that number (docs/money-rules.md#commit-first).
-- state is RECORDED (committed, WeChat has not acknowledged it), then WeChat's receipt_state,
-- forward only: RECEIPT_STATE_PENDING, RECEIPT_STATE_PROGRESS, RECEIPT_STATE_COMPLETED (final);
-- or REJECTED (final, only from RECORDED): WeChat definitely holds no instruction of that
-- number (PARAM_ERROR, an unknown receipt, the receipt instructed under another number).
-- At most one instruction per receipt is live (not REJECTED). amount is the receipt's, in fen,
-- once WeChat told it (0 before). create_time, last_update_time, success_time and product_name
-- are WeChat's, as it sent them. attempts counts sends, each counted before it goes out; last_error is the last attempt's or
-- query's error ('' after a success). Times are Unix milliseconds.
CREATE TABLE abnormal_instructions (
	id                 INTEGER PRIMARY KEY,
	receipt_id         TEXT NOT NULL CHECK (length(receipt_id) BETWEEN 1 AND 64),
	out_instruction_no TEXT NOT NULL CHECK (length(out_instruction_no) BETWEEN 1 AND 64),
	appids             TEXT NOT NULL CHECK (appids != ''), -- comma-separated, as in the body
	notify_url         TEXT NOT NULL DEFAULT '',
	body               BLOB NOT NULL CHECK (length(body) > 0),
	state              TEXT NOT NULL CHECK (state IN ('RECORDED', 'RECEIPT_STATE_PENDING', 'RECEIPT_STATE_PROGRESS',
	                                                  'RECEIPT_STATE_COMPLETED', 'REJECTED')),
	amount             INTEGER NOT NULL DEFAULT 0 CHECK (amount >= 0),
	product_name       TEXT NOT NULL DEFAULT '',
	create_time        TEXT NOT NULL DEFAULT '',
	last_update_time   TEXT NOT NULL DEFAULT '',
	success_time       TEXT NOT NULL DEFAULT '',
	attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	last_error         TEXT NOT NULL DEFAULT '',
	created_at         INTEGER NOT NULL CHECK (created_at > 0),
	updated_at         INTEGER NOT NULL CHECK (updated_at >= created_at),
	sent_at            INTEGER NOT NULL DEFAULT 0, -- the first attempt; 0 = never sent
	final_at           INTEGER NOT NULL DEFAULT 0 CHECK ((final_at > 0) = (state IN ('RECEIPT_STATE_COMPLETED', 'REJECTED'))),
	UNIQUE (receipt_id, out_instruction_no)
) STRICT;

CREATE UNIQUE INDEX abnormal_instructions_live ON abnormal_instructions (receipt_id) WHERE state != 'REJECTED';
CREATE INDEX abnormal_instructions_open ON abnormal_instructions (id)
	WHERE state NOT IN ('RECEIPT_STATE_COMPLETED', 'REJECTED');

-- The request never changes: number, receipt, body, appids and notify_url are frozen.
CREATE TRIGGER abnormal_instructions_frozen BEFORE UPDATE OF receipt_id, out_instruction_no, appids, notify_url, body, created_at
	ON abnormal_instructions
BEGIN SELECT RAISE(ABORT, 'an abnormal-fund instruction''s request is frozen'); END;
CREATE TRIGGER abnormal_instructions_keep BEFORE DELETE ON abnormal_instructions
BEGIN SELECT RAISE(ABORT, 'abnormal-fund instructions are never deleted'); END;

-- abnormal_log: append-only history of every instruction: its record, each attempt (logged
-- before it is sent), each answer applied (from → to), each error of a send or query, a
-- rejection.
CREATE TABLE abnormal_log (
	id          INTEGER PRIMARY KEY,
	instruction INTEGER NOT NULL REFERENCES abnormal_instructions (id),
	at          INTEGER NOT NULL CHECK (at > 0),
	kind        TEXT NOT NULL CHECK (kind IN ('record', 'attempt', 'answer', 'error', 'reject')),
	from_state  TEXT NOT NULL DEFAULT '',
	to_state    TEXT NOT NULL DEFAULT '',
	detail      TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX abnormal_log_instruction ON abnormal_log (instruction, id);

CREATE TRIGGER abnormal_log_append_only_update BEFORE UPDATE ON abnormal_log
BEGIN SELECT RAISE(ABORT, 'the abnormal-fund log is append-only'); END;
CREATE TRIGGER abnormal_log_append_only_delete BEFORE DELETE ON abnormal_log
BEGIN SELECT RAISE(ABORT, 'the abnormal-fund log is append-only'); END;

-- audit_abnormal_stuck: an instruction nothing finished. RECORDED for over an hour was never
-- acknowledged by WeChat (never sent, or its answers lost): `processor abnormal-fund resume`
-- continues it. PENDING or PROGRESS for over 7 days: WeChat has not completed it (the payee has
-- not collected; how long WeChat waits is not documented): ask WeChat Pay.
CREATE VIEW audit_abnormal_stuck AS
SELECT printf('abnormal_instructions id=%d receipt_id=%s out_instruction_no=%s', id, receipt_id, out_instruction_no) AS row,
       printf('%s since %s after %d attempts%s', state, strftime('%Y-%m-%dT%H:%M:%SZ', updated_at / 1000, 'unixepoch'), attempts,
              CASE WHEN last_error != '' THEN ', last error: ' || last_error ELSE '' END) AS detail
FROM abnormal_instructions
WHERE (state = 'RECORDED' AND updated_at < (CAST(strftime('%s', 'now') AS INTEGER) - 3600) * 1000)
   OR (state IN ('RECEIPT_STATE_PENDING', 'RECEIPT_STATE_PROGRESS')
       AND updated_at < (CAST(strftime('%s', 'now') AS INTEGER) - 7 * 86400) * 1000);

-- audit_abnormal_history: an instruction's row agrees with its log: it was recorded once,
-- its attempts are counted, WeChat never answered one that was never sent, and its state is
-- the last one the log moved it to.
CREATE VIEW audit_abnormal_history AS
SELECT printf('abnormal_instructions id=%d receipt_id=%s out_instruction_no=%s', i.id, i.receipt_id, i.out_instruction_no) AS row,
       printf('state %s, %d attempts, but the log has %d record rows, %d attempts and ends in %s',
              i.state, i.attempts, coalesce(l.records, 0), coalesce(l.attempts, 0), coalesce(l.last_state, 'nothing')) AS detail
FROM abnormal_instructions i
LEFT JOIN (SELECT instruction,
                  count(CASE kind WHEN 'record' THEN 1 END) AS records,
                  count(CASE kind WHEN 'attempt' THEN 1 END) AS attempts,
                  (SELECT to_state FROM abnormal_log x WHERE x.instruction = g.instruction AND x.to_state != ''
                   ORDER BY x.id DESC LIMIT 1) AS last_state
           FROM abnormal_log g GROUP BY instruction) l ON l.instruction = i.id
WHERE coalesce(l.records, 0) != 1 OR coalesce(l.attempts, 0) != i.attempts
   OR coalesce(l.last_state, '') != i.state
   OR (i.state NOT IN ('RECORDED', 'REJECTED') AND i.attempts = 0);
