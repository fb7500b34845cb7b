-- 0010: the CHECK constraints that name a list of values (state IN ('RECEIVED', …)) are spelled
-- as equalities joined by OR. Same constraints, a fraction of the cost: SQLite evaluates an IN
-- over more than two constants through a temporary index of the list, and a CHECK built it
-- again for every row written, about 2.5 µs a row for the payouts' fifteen states. Intake
-- writes every payout row once, a query page updates a thousand states, a settled payout
-- writes its outcome. BenchmarkCommitIntake on tmpfs: a payout row sealed at intake took
-- 12–14 µs, now 9–10; BenchmarkApplyDetailPage: 41–52k rows/s, now 57–58k. Only the tables
-- written per payout or per event change; a list of two values (settled IN (0, 1)) is
-- already compared in line.
--
-- The tables are not rebuilt: the constraints are replaced in their stored text, the
-- procedure SQLite documents for changing constraints (https://www.sqlite.org/lang_altertable.html#otheralter),
-- which costs nothing however many rows a ledger holds. No row can fail an equivalent
-- constraint. The CREATE and DROP of paystream_schema_bump move the schema version, so any
-- other connection reads the schema again (the procedure's last step). TestMigrate_ChecksInLine
-- shows the old spellings are gone and the constraints still refuse. Never edit this file
-- once shipped.

PRAGMA writable_schema = ON;

UPDATE sqlite_schema SET sql = replace(replace(sql,
	'CHECK (rail IN (''direct'', ''partner'', ''bills''))',
	'CHECK (rail = ''direct'' OR rail = ''partner'' OR rail = ''bills'')'),
	'CHECK (state IN (''RECEIVED'', ''CLAIMED'', ''DUPLICATE'', ''SEALED'', ''INIT'', ''WAIT_PAY'', ''PROCESSING'',
	                                                ''SUCCESS'', ''FAIL'', ''REJECTED'', ''ACCEPTED'', ''WAIT_USER_CONFIRM'', ''TRANSFERING'',
	                                                ''CANCELING'', ''CANCELLED''))',
	'CHECK (state = ''RECEIVED'' OR state = ''CLAIMED'' OR state = ''DUPLICATE'' OR state = ''SEALED'' OR state = ''INIT''
	                        OR state = ''WAIT_PAY'' OR state = ''PROCESSING'' OR state = ''SUCCESS'' OR state = ''FAIL''
	                        OR state = ''REJECTED'' OR state = ''ACCEPTED'' OR state = ''WAIT_USER_CONFIRM'' OR state = ''TRANSFERING''
	                        OR state = ''CANCELING'' OR state = ''CANCELLED'')')
WHERE type = 'table' AND name = 'payouts';

UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''DUPLICATE'', ''SUCCESS'', ''FAIL'', ''REJECTED'', ''CANCELLED''))',
	'CHECK (state = ''DUPLICATE'' OR state = ''SUCCESS'' OR state = ''FAIL'' OR state = ''REJECTED'' OR state = ''CANCELLED'')')
WHERE type = 'table' AND name = 'outcomes';

UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (cancel_closed IN ('''', ''done'', ''refused'', ''local''))',
	'CHECK (cancel_closed = '''' OR cancel_closed = ''done'' OR cancel_closed = ''refused'' OR cancel_closed = ''local'')')
WHERE type = 'table' AND name = 'bills';

UPDATE sqlite_schema SET sql = replace(replace(sql,
	'CHECK (rail IN (''direct'', ''partner'', ''bills''))',
	'CHECK (rail = ''direct'' OR rail = ''partner'' OR rail = ''bills'')'),
	'CHECK (state IN (''SEALED'', ''WAIT_PAY'', ''ACCEPTED'', ''PROCESSING'', ''FINISHED'', ''CLOSED'', ''REJECTED''))',
	'CHECK (state = ''SEALED'' OR state = ''WAIT_PAY'' OR state = ''ACCEPTED'' OR state = ''PROCESSING'' OR state = ''FINISHED'' OR state = ''CLOSED'' OR state = ''REJECTED'')')
WHERE type = 'table' AND name = 'batches';

UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (source IN (''intake'', ''pipeline'', ''submit'', ''query'', ''callback'', ''operator''))',
	'CHECK (source = ''intake'' OR source = ''pipeline'' OR source = ''submit'' OR source = ''query'' OR source = ''callback'' OR source = ''operator'')')
WHERE type = 'table' AND name = 'events';

PRAGMA writable_schema = RESET;

CREATE TABLE paystream_schema_bump (x);
DROP TABLE paystream_schema_bump;
