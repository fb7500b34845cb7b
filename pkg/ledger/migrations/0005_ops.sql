-- 0005: operating paystream (issue 14). Never edit this file once shipped.

-- WeChat's message with the refusal in last_error_code (at most 512 bytes), for operators'
-- eyes only: nothing decides on it.
ALTER TABLE batches ADD COLUMN last_error_message TEXT NOT NULL DEFAULT '';
ALTER TABLE bills ADD COLUMN last_error_message TEXT NOT NULL DEFAULT '';

-- Ops (the status page and the metrics, every few seconds): batches by rail and state and
-- the non-settled ones with what decides whether they are parked, without reading a row
-- (whose frozen body sits before these columns).
CREATE INDEX batches_ops ON batches (settled, rail, state, last_error_code, sealed_at, out_batch_no);

-- Lookup (a payout's history): the events of one batch, and the intake events (no batch).
-- Both grow in id order, so they only append.
CREATE INDEX events_batch ON events (out_batch_no, id) WHERE out_batch_no != '';
CREATE INDEX events_intake ON events (id) WHERE out_batch_no = '';
