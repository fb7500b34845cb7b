-- 0006: reconciliation runs (issue 15, docs/reconciliation.md §5). Never edit this file once
-- shipped.

-- reconcile_runs: one row per `processor reconcile` run recorded in this ledger: the bill day
-- (China Standard Time), when it ran, how (three-way within WeChat's 30-day query window,
-- bill-only beyond), what it found, which bill it judged against and the SHA-256 of the JSON
-- report it wrote. bill is 'file' (a downloaded file whose SHA1 matched WeChat's hash_value:
-- bill_sha1), 'none' (WeChat answered NO_STATEMENT_EXIST: no movement that day) or 'refused'
-- (a file that was not believed, e.g. a hash mismatch). Append-only, like events.
CREATE TABLE reconcile_runs (
	id            INTEGER PRIMARY KEY,
	bill_date     TEXT NOT NULL CHECK (bill_date GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
	at            INTEGER NOT NULL CHECK (at > 0),
	mode          TEXT NOT NULL CHECK (mode IN ('three-way', 'bill-only')),
	bill          TEXT NOT NULL CHECK (bill IN ('file', 'none', 'refused')),
	bill_sha1     TEXT NOT NULL CHECK ((bill = 'file') = (length(bill_sha1) = 40 AND bill_sha1 NOT GLOB '*[^0-9a-f]*')),
	payouts       INTEGER NOT NULL CHECK (payouts >= 0),
	matched       INTEGER NOT NULL CHECK (matched >= 0),
	missing       INTEGER NOT NULL CHECK (missing >= 0),
	mismatched    INTEGER NOT NULL CHECK (mismatched >= 0),
	report_sha256 TEXT NOT NULL CHECK (length(report_sha256) = 64 AND report_sha256 NOT GLOB '*[^0-9a-f]*')
) STRICT;

CREATE TRIGGER reconcile_runs_append_only_update BEFORE UPDATE ON reconcile_runs
BEGIN SELECT RAISE(ABORT, 'reconcile runs are append-only'); END;
CREATE TRIGGER reconcile_runs_append_only_delete BEFORE DELETE ON reconcile_runs
BEGIN SELECT RAISE(ABORT, 'reconcile runs are append-only'); END;

-- audit_reconcile_runs: a refused bill proves nothing, so a run against one must have
-- reported something missing; a run that says all is clean without a believed bill, or
-- without a bill on a day it counted payouts, is wrong.
CREATE VIEW audit_reconcile_runs AS
SELECT printf('reconcile_runs id=%d bill_date=%s', id, bill_date) AS row,
       printf('bill %s, %d payouts, but missing=%d mismatched=%d: nothing proved them paid', bill, payouts, missing, mismatched) AS detail
FROM reconcile_runs
WHERE missing = 0 AND mismatched = 0 AND (bill = 'refused' OR (bill = 'none' AND payouts > 0));
