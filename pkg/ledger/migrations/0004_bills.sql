-- 0004: the transfer-bills rail (issue 13). Never edit this file once shipped.
--
-- batches, payouts and outcomes are rebuilt to widen their CHECK constraints, following
-- SQLite's generalized ALTER TABLE procedure (https://www.sqlite.org/lang_altertable.html,
-- "Making Other Kinds Of Table Schema Changes"): create new_X, copy, drop X, rename new_X to
-- X, recreate X's indexes. The migration runner turns foreign_keys off around this
-- transaction and runs PRAGMA foreign_key_check before committing (steps 1 and 10). The
-- views of 0002/0003 name these tables: legacy_alter_table keeps the renames from
-- re-parsing them while the old tables are gone (step 9); the views whose meaning changes
-- are dropped and recreated below.

PRAGMA legacy_alter_table = ON;

DROP VIEW audit_batch_cap;
DROP VIEW audit_member_states;
DROP VIEW audit_outcomes;
DROP VIEW batch_summary;

CREATE TABLE new_batches (
	out_batch_no    TEXT PRIMARY KEY CHECK (length(out_batch_no) BETWEEN 1 AND 32 AND out_batch_no NOT GLOB '*[^0-9A-Za-z]*'),
	rail            TEXT NOT NULL CHECK (rail IN ('direct', 'partner', 'bills')),
	group_key       TEXT NOT NULL,
	mchid           TEXT NOT NULL,
	total_amount    INTEGER NOT NULL CHECK (total_amount > 0),
	total_num       INTEGER NOT NULL CHECK (total_num BETWEEN 1 AND 3000),
	body            BLOB NOT NULL,
	state           TEXT NOT NULL CHECK (state IN ('SEALED', 'WAIT_PAY', 'ACCEPTED', 'PROCESSING', 'FINISHED', 'CLOSED', 'REJECTED')),
	batch_id        TEXT NOT NULL DEFAULT '',
	attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	last_error_code TEXT NOT NULL DEFAULT '',
	close_reason    TEXT NOT NULL DEFAULT '',
	success_amount  INTEGER NOT NULL DEFAULT 0 CHECK (success_amount >= 0),
	fail_amount     INTEGER NOT NULL DEFAULT 0 CHECK (fail_amount >= 0),
	success_num     INTEGER NOT NULL DEFAULT 0 CHECK (success_num >= 0),
	fail_num        INTEGER NOT NULL DEFAULT 0 CHECK (fail_num >= 0),
	next_at         INTEGER NOT NULL,
	not_found_since INTEGER NOT NULL DEFAULT 0,
	sealed_at       INTEGER NOT NULL,
	accepted_at     INTEGER NOT NULL DEFAULT 0,
	state_at        INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	settled         INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1))
) STRICT;
INSERT INTO new_batches (out_batch_no, rail, group_key, mchid, total_amount, total_num, body, state, batch_id, attempts,
	last_error_code, close_reason, success_amount, fail_amount, success_num, fail_num, next_at, not_found_since,
	sealed_at, accepted_at, state_at, updated_at, settled)
SELECT out_batch_no, rail, group_key, mchid, total_amount, total_num, body, state, batch_id, attempts,
	last_error_code, close_reason, success_amount, fail_amount, success_num, fail_num, next_at, not_found_since,
	sealed_at, accepted_at, state_at, updated_at, settled FROM batches;
DROP TABLE batches;
ALTER TABLE new_batches RENAME TO batches;
CREATE INDEX batches_due ON batches (next_at) WHERE settled = 0;

-- payouts: states of both rails (see states.go); bill_info is the request's
-- user_recv_perception and transfer_scene_report_infos (JSON, opaque to the ledger).
CREATE TABLE new_payouts (
	seq              INTEGER PRIMARY KEY,
	key_hash         INTEGER NOT NULL,
	out_detail_no    TEXT NOT NULL CHECK (length(out_detail_no) BETWEEN 1 AND 32),
	mchid            TEXT NOT NULL,
	appid            TEXT NOT NULL,
	sub_mchid        TEXT NOT NULL,
	openid           TEXT NOT NULL,
	remark           TEXT NOT NULL,
	scene_id         TEXT NOT NULL,
	rail             TEXT NOT NULL CHECK (rail IN ('direct', 'partner', 'bills')),
	group_key        TEXT NOT NULL,
	amount           INTEGER NOT NULL CHECK (amount > 0),
	user_name_cipher TEXT NOT NULL,
	content_hash     BLOB NOT NULL,
	stream_seq       INTEGER NOT NULL CHECK (stream_seq >= 0),
	state            TEXT NOT NULL CHECK (state IN ('RECEIVED', 'CLAIMED', 'DUPLICATE', 'SEALED', 'INIT', 'WAIT_PAY', 'PROCESSING',
	                                                'SUCCESS', 'FAIL', 'REJECTED', 'ACCEPTED', 'WAIT_USER_CONFIRM', 'TRANSFERING',
	                                                'CANCELING', 'CANCELLED')),
	out_batch_no     TEXT REFERENCES batches (out_batch_no),
	batch_pos        INTEGER,
	detail_id        TEXT NOT NULL DEFAULT '',
	fail_reason      TEXT NOT NULL DEFAULT '',
	received_at      INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	bill_info        TEXT NOT NULL DEFAULT '',
	CHECK ((out_batch_no IS NULL) = (batch_pos IS NULL))
) STRICT;
INSERT INTO new_payouts (seq, key_hash, out_detail_no, mchid, appid, sub_mchid, openid, remark, scene_id, rail, group_key,
	amount, user_name_cipher, content_hash, stream_seq, state, out_batch_no, batch_pos, detail_id, fail_reason,
	received_at, updated_at)
SELECT seq, key_hash, out_detail_no, mchid, appid, sub_mchid, openid, remark, scene_id, rail, group_key,
	amount, user_name_cipher, content_hash, stream_seq, state, out_batch_no, batch_pos, detail_id, fail_reason,
	received_at, updated_at FROM payouts;
DROP TABLE payouts;
ALTER TABLE new_payouts RENAME TO payouts;
CREATE INDEX payouts_keys ON payouts (seq, key_hash);
CREATE INDEX payouts_open ON payouts (state, seq) WHERE state IN ('RECEIVED', 'CLAIMED');
CREATE INDEX payouts_batch ON payouts (out_batch_no, batch_pos) WHERE out_batch_no IS NOT NULL;

CREATE TABLE new_outcomes (
	id           INTEGER PRIMARY KEY,
	seq          INTEGER NOT NULL UNIQUE REFERENCES payouts (seq),
	state        TEXT NOT NULL CHECK (state IN ('DUPLICATE', 'SUCCESS', 'FAIL', 'REJECTED', 'CANCELLED')),
	at           INTEGER NOT NULL,
	published_at INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO new_outcomes (id, seq, state, at, published_at) SELECT id, seq, state, at, published_at FROM outcomes;
DROP TABLE outcomes;
ALTER TABLE new_outcomes RENAME TO outcomes;
CREATE INDEX outcomes_pending ON outcomes (id) WHERE published_at = 0;

PRAGMA legacy_alter_table = OFF;

-- bills: one row per member of a rail-bills batch, committed with the batch (SealBatch).
-- out_bill_no is the member's out_detail_no; body is its frozen create-request body, sent
-- byte for byte on every create. The bill's state is its payout's state (payouts.state).
-- cancel_closed: '' while a requested cancel is open (or none was requested), 'done' when
-- it ended in CANCELLED, 'refused' when it cannot happen, 'local' when the bill was
-- cancelled before WeChat ever saw it.
CREATE TABLE bills (
	out_bill_no         TEXT PRIMARY KEY,
	seq                 INTEGER NOT NULL UNIQUE REFERENCES payouts (seq),
	out_batch_no        TEXT NOT NULL REFERENCES batches (out_batch_no),
	body                BLOB NOT NULL,
	transfer_bill_no    TEXT NOT NULL DEFAULT '',
	package_info        TEXT NOT NULL DEFAULT '',
	create_time         INTEGER NOT NULL DEFAULT 0,
	expire_at           INTEGER NOT NULL DEFAULT 0,
	attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	last_error_code     TEXT NOT NULL DEFAULT '',
	next_at             INTEGER NOT NULL,
	not_found_since     INTEGER NOT NULL DEFAULT 0,
	cancel_requested_at INTEGER NOT NULL DEFAULT 0,
	cancel_reason       TEXT NOT NULL DEFAULT '',
	cancel_attempts     INTEGER NOT NULL DEFAULT 0 CHECK (cancel_attempts >= 0),
	cancel_closed       TEXT NOT NULL DEFAULT '' CHECK (cancel_closed IN ('', 'done', 'refused', 'local')),
	state_at            INTEGER NOT NULL,
	updated_at          INTEGER NOT NULL,
	settled             INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1))
) STRICT;

-- DueBills and a batch's next_at (the earliest of its unsettled bills).
CREATE INDEX bills_due ON bills (out_batch_no, next_at) WHERE settled = 0;

-- cancels: upstream cancel requests (payout.CancelRequest), one per payout; kept for payouts
-- not yet sealed too, whose bill takes it over when sealed.
CREATE TABLE cancels (
	seq    INTEGER PRIMARY KEY REFERENCES payouts (seq),
	reason TEXT NOT NULL,
	at     INTEGER NOT NULL
) STRICT;

-- notices: the outbox of events that are not outcomes (WAIT_USER_CONFIRM, CANCEL_REFUSED),
-- written in the transaction that made them true; published_at is set once published.
-- data is the JSON the event needs beyond the payout row.
CREATE TABLE notices (
	id           INTEGER PRIMARY KEY,
	seq          INTEGER NOT NULL REFERENCES payouts (seq),
	kind         TEXT NOT NULL CHECK (kind IN ('WAIT_USER_CONFIRM', 'CANCEL_REFUSED')),
	data         TEXT NOT NULL,
	at           INTEGER NOT NULL,
	published_at INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE UNIQUE INDEX notices_confirm_once ON notices (seq) WHERE kind = 'WAIT_USER_CONFIRM';
CREATE INDEX notices_pending ON notices (id) WHERE published_at = 0;

-- Views of 0002 whose meaning changes with the bills rail.

CREATE VIEW audit_batch_cap AS
SELECT 'batches out_batch_no=' || out_batch_no AS row,
       printf('total_num=%d over the %s cap %d', total_num, rail,
              CASE rail WHEN 'partner' THEN 3000 ELSE 1000 END) AS detail
FROM batches
WHERE total_num > CASE rail WHEN 'partner' THEN 3000 ELSE 1000 END;

-- On the bills rail members are rejected one by one (a batch is never REJECTED as a whole),
-- and a member's states are WeChat's bill states.
CREATE VIEW audit_member_states AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('%s state %s with batch %s (%s batch state %s, settled %d)', p.rail, p.state,
              coalesce(p.out_batch_no, 'none'), coalesce(b.rail, 'no'), coalesce(b.state, 'none'), coalesce(b.settled, 0)) AS detail
FROM payouts p
LEFT JOIN batches b ON b.out_batch_no = p.out_batch_no
WHERE (p.out_batch_no IS NULL) != (p.state IN ('RECEIVED', 'CLAIMED', 'DUPLICATE'))
   OR b.rail != p.rail
   OR (p.rail != 'bills' AND b.state = 'REJECTED' AND p.state != 'REJECTED')
   OR (p.rail != 'bills' AND b.state != 'REJECTED' AND p.state = 'REJECTED')
   OR (p.rail = 'bills' AND b.state = 'REJECTED')
   OR (p.rail = 'bills' AND p.state IN ('INIT', 'WAIT_PAY'))
   OR (p.rail != 'bills' AND p.state IN ('ACCEPTED', 'WAIT_USER_CONFIRM', 'TRANSFERING', 'CANCELING', 'CANCELLED'))
   OR (b.settled = 1 AND p.state NOT IN ('SUCCESS', 'FAIL', 'REJECTED', 'CANCELLED'));

CREATE VIEW audit_outcomes AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('state %s but outbox has %s', p.state, coalesce(o.state, 'no row')) AS detail
FROM payouts p
LEFT JOIN outcomes o ON o.seq = p.seq
WHERE (p.state IN ('DUPLICATE', 'SUCCESS', 'FAIL', 'REJECTED', 'CANCELLED')) != (o.seq IS NOT NULL)
   OR o.state != p.state;

CREATE VIEW batch_summary AS
SELECT b.out_batch_no, b.rail, b.mchid, b.state, b.batch_id, b.total_num, b.total_amount,
       b.success_num, b.success_amount, b.fail_num, b.fail_amount, b.close_reason,
       b.attempts, b.last_error_code, b.settled,
       count(p.seq) AS members,
       coalesce(sum(CASE WHEN p.state = 'SUCCESS' THEN p.amount END), 0) AS members_success_amount,
       coalesce(sum(CASE WHEN p.state = 'FAIL' THEN p.amount END), 0) AS members_fail_amount,
       count(CASE WHEN p.state NOT IN ('SUCCESS', 'FAIL', 'REJECTED', 'CANCELLED') THEN 1 END) AS members_open,
       datetime(b.sealed_at / 1000, 'unixepoch') AS sealed_at,
       datetime(b.updated_at / 1000, 'unixepoch') AS updated_at,
       datetime(b.next_at / 1000, 'unixepoch') AS next_at
FROM batches b
LEFT JOIN payouts p ON p.out_batch_no = b.out_batch_no
GROUP BY b.out_batch_no;

-- Audit views of the bills rail.

-- audit_bill_rows: every bills row belongs to a rail-bills batch and to its member of that
-- batch, out_bill_no is the member's out_detail_no, and the frozen body names the same
-- out_bill_no and amount.
CREATE VIEW audit_bill_rows AS
SELECT 'bills out_bill_no=' || b.out_bill_no AS row,
       printf('seq=%d batch %s (%s rail); member %s in batch %s (%s rail) for %s fen; body says out_bill_no=%s transfer_amount=%s',
              b.seq, b.out_batch_no, coalesce(t.rail, 'no'), coalesce(p.out_detail_no, 'none'),
              coalesce(p.out_batch_no, 'none'), coalesce(p.rail, 'no'), coalesce(p.amount, '?'),
              coalesce(j.bill_no, '?'), coalesce(j.amount, '?')) AS detail
FROM bills b
LEFT JOIN payouts p ON p.seq = b.seq
LEFT JOIN batches t ON t.out_batch_no = b.out_batch_no
LEFT JOIN (SELECT out_bill_no,
                  CASE WHEN json_valid(CAST(body AS TEXT)) THEN json_extract(CAST(body AS TEXT), '$.out_bill_no') END AS bill_no,
                  CASE WHEN json_valid(CAST(body AS TEXT)) THEN json_extract(CAST(body AS TEXT), '$.transfer_amount') END AS amount
           FROM bills) j ON j.out_bill_no = b.out_bill_no
WHERE p.seq IS NULL OR t.out_batch_no IS NULL OR t.rail != 'bills' OR p.rail != 'bills'
   OR p.out_batch_no IS NOT b.out_batch_no OR p.out_detail_no != b.out_bill_no
   OR j.bill_no IS NOT b.out_bill_no OR j.amount IS NOT p.amount;

-- audit_bill_missing: every member of a rail-bills batch has its bills row.
CREATE VIEW audit_bill_missing AS
SELECT printf('payouts seq=%d out_detail_no=%s', p.seq, p.out_detail_no) AS row,
       printf('member of rail-bills batch %s without a bills row', p.out_batch_no) AS detail
FROM payouts p
JOIN batches t ON t.out_batch_no = p.out_batch_no AND t.rail = 'bills'
WHERE NOT EXISTS (SELECT 1 FROM bills b WHERE b.seq = p.seq);

-- audit_bill_notice: a bill waiting for its payee with a package_info known has had its
-- WAIT_USER_CONFIRM notice written (same transaction), so the payee's app can be told.
CREATE VIEW audit_bill_notice AS
SELECT 'bills out_bill_no=' || b.out_bill_no AS row,
       'WAIT_USER_CONFIRM with a package_info but no WAIT_USER_CONFIRM notice' AS detail
FROM bills b
JOIN payouts p ON p.seq = b.seq
WHERE p.state = 'WAIT_USER_CONFIRM' AND b.package_info != ''
  AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.seq = b.seq AND n.kind = 'WAIT_USER_CONFIRM');

-- audit_bill_transfer_no: WeChat's transfer_bill_no names one bill.
CREATE VIEW audit_bill_transfer_no AS
SELECT 'bills transfer_bill_no=' || transfer_bill_no AS row,
       printf('shared by %d bills (%s)', count(*), group_concat(out_bill_no)) AS detail
FROM bills
WHERE transfer_bill_no != ''
GROUP BY transfer_bill_no
HAVING count(*) > 1;
