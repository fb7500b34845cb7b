-- 0009: a batch's frozen body lives in a table of its own. Never edit this file once shipped.
--
-- The body (a thousand details or more, hundreds of kilobytes) sat inside the batches row,
-- before the columns every step reads and writes: reading state or next_at walked the body's
-- overflow pages, and each UPDATE of a batch (a submit recorded, a status applied) rebuilt
-- the whole record, body included. Now a batches row is a few hundred bytes, and the body is
-- written once, at the seal, and never changed or removed (the triggers refuse both).

CREATE TABLE batch_bodies (
	out_batch_no TEXT PRIMARY KEY REFERENCES batches (out_batch_no),
	body         BLOB NOT NULL
) STRICT;

INSERT INTO batch_bodies (out_batch_no, body) SELECT out_batch_no, body FROM batches;
ALTER TABLE batches DROP COLUMN body;

CREATE TRIGGER batch_bodies_frozen BEFORE UPDATE ON batch_bodies
BEGIN SELECT RAISE(ABORT, 'a batch body is frozen at its seal'); END;
CREATE TRIGGER batch_bodies_keep BEFORE DELETE ON batch_bodies
BEGIN SELECT RAISE(ABORT, 'a batch body is never deleted'); END;
