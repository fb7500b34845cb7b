#!/usr/bin/env bash
# make run: the whole pipeline on the embedded defaults. Starts the WeChat Pay sandbox (fast
# clock, a few faults) and a processor on embedded JetStream, publishes testdata/payouts.jsonl,
# waits until every batch is final, prints a summary, audits the ledger and stops everything.
# The ledger is left at .run/ledger.db.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
BIN=bin
rm -rf "$RUN"
mkdir -p "$RUN"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_for FILE SECONDS: until FILE exists and is not empty.
wait_for() {
	for _ in $(seq $(($2 * 10))); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	echo "run: $1 did not appear within $2 s" >&2
	return 1
}

# The merchant key must be 0600 (git does not keep modes).
install -m 600 testdata/testvectors/merchant_TEST_ONLY_private_key.pem "$RUN/"

echo "== starting the WeChat Pay sandbox (TEST-ONLY keys, 60x clock, 3% SYSTEM_ERROR, 3% commit-then-drop)"
"$BIN/sandbox" --listen 127.0.0.1:0 --admin --speed 60 --seed 7 \
	--system-error-rate 0.03 --drop-after-commit-rate 0.03 --not-found-lag 1s \
	--no-password-limit 500000 --auto-confirm 30s \
	--state "$RUN/sandbox-state.json" >"$RUN/sandbox.out" 2>"$RUN/sandbox.log" &
pids+=($!)
wait_for "$RUN/sandbox.out" 20
SANDBOX_URL=$(head -1 "$RUN/sandbox.out" | sed 's/.* on //')
echo "   $SANDBOX_URL"

echo "== starting the processor (embedded JetStream, ledger $RUN/ledger.db)"
DATA_DIR=$RUN SANDBOX_URL=$SANDBOX_URL "$BIN/processor" run --config configs/demo-processor.yaml 2>"$RUN/processor.log" &
proc=$!
pids+=($proc)
wait_for "$RUN/nats.url" 30
NATS_URL=$(cat "$RUN/nats.url")
echo "   $NATS_URL"

echo "== publishing testdata/payouts.jsonl"
"$BIN/producer" publish --config configs/demo-producer.yaml --file testdata/payouts.jsonl --url "$NATS_URL" >"$RUN/producer.out" 2>"$RUN/producer.log"
cat "$RUN/producer.out"
echo "   (invalid records are listed with their line numbers in $RUN/producer.log)"
published=$(sed -n 's/^published \([0-9]*\).*/\1/p' "$RUN/producer.out")

echo "== waiting until every batch and payout is final"
"$BIN/processor" summary --ledger "$RUN/ledger.db" --wait 150s --expect "$published"
echo
echo "== stopping the processor"
kill -TERM "$proc"
wait "$proc"
echo "== auditing the ledger"
"$BIN/processor" audit --ledger "$RUN/ledger.db"
echo
echo "done: ledger at $RUN/ledger.db (open it with sqlite3), logs in $RUN/"
