-- 0001: the ledger's tables. Never edit this file once shipped; add a new migration instead.
-- Times are Unix milliseconds (UTC); 0 means "not set". Amounts are integer fen.

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;

-- batches: one row per out_batch_no, committed with its frozen body before the first submit.
CREATE TABLE batches (
	out_batch_no    TEXT PRIMARY KEY CHECK (length(out_batch_no) BETWEEN 1 AND 32 AND out_batch_no NOT GLOB '*[^0-9A-Za-z]*'),
	rail            TEXT NOT NULL CHECK (rail IN ('direct', 'partner')),
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

CREATE INDEX batches_due ON batches (next_at) WHERE settled = 0;

-- payouts: the rowid (seq) is the ledger's own ordered sequence so that intake only appends.
-- The random upstream key has NO B-tree index (a random-key index dirties one page per row
-- on every commit): the writer keeps key_hash → seq in memory, loaded at open from the
-- append-only (seq, key_hash) index, and compares the text on a hit. Uniqueness of
-- out_detail_no is enforced by the single writer and checked by audit (audit_duplicate_keys).
CREATE TABLE payouts (
	seq              INTEGER PRIMARY KEY,
	key_hash         INTEGER NOT NULL,
	out_detail_no    TEXT NOT NULL CHECK (length(out_detail_no) BETWEEN 1 AND 32),
	mchid            TEXT NOT NULL,
	appid            TEXT NOT NULL,
	sub_mchid        TEXT NOT NULL,
	openid           TEXT NOT NULL,
	remark           TEXT NOT NULL,
	scene_id         TEXT NOT NULL,
	rail             TEXT NOT NULL CHECK (rail IN ('direct', 'partner')),
	group_key        TEXT NOT NULL,
	amount           INTEGER NOT NULL CHECK (amount > 0),
	user_name_cipher TEXT NOT NULL,
	content_hash     BLOB NOT NULL,
	stream_seq       INTEGER NOT NULL CHECK (stream_seq >= 0),
	state            TEXT NOT NULL CHECK (state IN ('RECEIVED', 'CLAIMED', 'DUPLICATE', 'SEALED', 'INIT', 'WAIT_PAY', 'PROCESSING', 'SUCCESS', 'FAIL', 'REJECTED')),
	out_batch_no     TEXT REFERENCES batches (out_batch_no),
	batch_pos        INTEGER,
	detail_id        TEXT NOT NULL DEFAULT '',
	fail_reason      TEXT NOT NULL DEFAULT '',
	received_at      INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	CHECK ((out_batch_no IS NULL) = (batch_pos IS NULL))
) STRICT;

CREATE INDEX payouts_keys ON payouts (seq, key_hash);
CREATE INDEX payouts_open ON payouts (state, seq) WHERE state IN ('RECEIVED', 'CLAIMED');
CREATE INDEX payouts_batch ON payouts (out_batch_no, batch_pos) WHERE out_batch_no IS NOT NULL;

-- conflicts: a request that reused a stored key with other content. Nothing is overwritten.
CREATE TABLE conflicts (
	id            INTEGER PRIMARY KEY,
	seq           INTEGER NOT NULL REFERENCES payouts (seq),
	out_detail_no TEXT NOT NULL,
	content_hash  BLOB NOT NULL,
	stream_seq    INTEGER NOT NULL,
	at            INTEGER NOT NULL
) STRICT;

-- events: append-only, hash-chained history of every state change.
-- hash = SHA-256(prev_hash || canonical encoding of the row); see events.go.
CREATE TABLE events (
	id           INTEGER PRIMARY KEY,
	at           INTEGER NOT NULL,
	source       TEXT NOT NULL CHECK (source IN ('intake', 'pipeline', 'submit', 'query', 'callback', 'operator')),
	kind         TEXT NOT NULL,
	out_batch_no TEXT NOT NULL DEFAULT '',
	seqs         TEXT NOT NULL DEFAULT '',
	from_state   TEXT NOT NULL DEFAULT '',
	to_state     TEXT NOT NULL DEFAULT '',
	data         TEXT NOT NULL DEFAULT '',
	digest       BLOB NOT NULL DEFAULT x'',
	prev_hash    BLOB NOT NULL,
	hash         BLOB NOT NULL
) STRICT;

CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- outcomes: the outbox. One row per payout reaching a final state, written in the same
-- transaction; published_at is set once the pipeline has published it.
CREATE TABLE outcomes (
	id           INTEGER PRIMARY KEY,
	seq          INTEGER NOT NULL UNIQUE REFERENCES payouts (seq),
	state        TEXT NOT NULL CHECK (state IN ('DUPLICATE', 'SUCCESS', 'FAIL', 'REJECTED')),
	at           INTEGER NOT NULL,
	published_at INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX outcomes_pending ON outcomes (id) WHERE published_at = 0;

-- notifications: processed callback ids (spec §4: dedupe on id).
CREATE TABLE notifications (
	id           TEXT PRIMARY KEY,
	out_batch_no TEXT NOT NULL,
	at           INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
