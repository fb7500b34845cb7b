-- 0005: operating paystream (issue 14). Never edit this file once shipped.

-- WeChat's message with the refusal in last_error_code (at most 512 bytes), for operators'
-- eyes only: nothing decides on it.
ALTER TABLE batches ADD COLUMN last_error_message TEXT NOT NULL DEFAULT '';
ALTER TABLE bills ADD COLUMN last_error_message TEXT NOT NULL DEFAULT '';

-- Ops (the status page and the metrics, every few seconds): batches by rail and state and
-- the non-settled ones with what decides whether they are parked, without reading a row
-- (whose frozen body sits before these columns). Ops reads it whole (INDEXED BY). settled
-- must not lead: the planner would take it for "settled = 0" over batches_due, and the
-- driver's due-batch reads would sort every open batch (intake measured 30 % slower).
CREATE INDEX batches_ops ON batches (rail, state, settled, last_error_code, sealed_at, out_batch_no);

-- Lookup (a payout's history): the events of one batch, and the intake events (no batch).
-- Both grow in id order, so they only append.
CREATE INDEX events_batch ON events (out_batch_no, id) WHERE out_batch_no != '';
CREATE INDEX events_intake ON events (id) WHERE out_batch_no = '';

-- payout_totals: payouts and their amount (fen) by state, kept by the writer in the
-- transaction that changes them (one statement a group of rows; row triggers cost intake a
-- third of its speed and sealing a sixth), so Ops reads a dozen rows instead of scanning
-- every payout. audit_payout_totals checks it against the payouts.
CREATE TABLE payout_totals (
	state  TEXT PRIMARY KEY,
	count  INTEGER NOT NULL,
	amount INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO payout_totals (state, count, amount) SELECT state, count(*), sum(amount) FROM payouts GROUP BY state;

CREATE VIEW audit_payout_totals AS
WITH p AS (SELECT state, count(*) AS n, sum(amount) AS amount FROM payouts GROUP BY state)
SELECT 'payout_totals state=' || t.state AS row,
       printf('counts %d payouts of %d fen; the payouts in that state are %d of %d fen',
              t.count, t.amount, coalesce(p.n, 0), coalesce(p.amount, 0)) AS detail
FROM payout_totals t LEFT JOIN p ON p.state = t.state
WHERE t.count != coalesce(p.n, 0) OR t.amount != coalesce(p.amount, 0)
UNION ALL
SELECT 'payout_totals state=' || p.state AS row,
       printf('no row; the payouts in that state are %d of %d fen', p.n, p.amount) AS detail
FROM p WHERE p.state NOT IN (SELECT state FROM payout_totals);
