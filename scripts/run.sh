#!/usr/bin/env bash
# make run: the whole pipeline on the embedded defaults. Starts the WeChat Pay sandbox (fast
# clock, a few faults) and a processor on embedded JetStream, publishes testdata/payouts.jsonl,
# waits until every batch is final, prints a summary, audits the ledger and stops everything.
# The ledger is left at .run/ledger.db.
#
# make run-bills (PRODUCT=bills): the same on the transfer-bills product: a merchant with
# transfer bills, callbacks on (a fifth of them lost), simulated payees who confirm most bills,
# decline or never confirm a few (those close as FAIL OVERDUE_CLOSE after a shortened 30 min),
# and upstream cancels for some of the unconfirmed ones.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
BIN=bin
PRODUCT=${PRODUCT:-batches}
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

# free_port: a TCP port nothing listens on, for the callback listener (its URL goes into
# every batch and bill, so it is fixed before the processor starts).
free_port() { # [first]: a free loopback port from first (default 18088) on
	local first=${1:-18088}
	for port in $(seq "$first" $((first + 100))); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	echo "run: no free port in $first..$((first + 100))" >&2
	return 1
}

# Callbacks on for both products: the sandbox notifies this listener (a fifth of the
# notifications lost, so the queries' sweep has work too).
CALLBACK_LISTEN="127.0.0.1:$(free_port)"
NOTIFY_URL="http://$CALLBACK_LISTEN/wechatpay/notify"
HTTP_LISTEN=${HTTP_LISTEN:-"127.0.0.1:$(free_port 18191)"}
ADMIN_TOKEN=${ADMIN_TOKEN:-"demo-admin-token-not-a-secret"}
product_flags=(--product "$PRODUCT" --notify-loss 0.2)
if [ "$PRODUCT" = bills ]; then
	product_flags+=(--bill-auto-confirm 20s --bill-accept-delay 0s --bill-confirm-timeout 30m --bill-close-lag 2m)
fi

echo "== starting the WeChat Pay sandbox ($PRODUCT merchant, TEST-ONLY keys, 60x clock, 3% SYSTEM_ERROR, 3% commit-then-drop)"
"$BIN/sandbox" --listen 127.0.0.1:0 --admin --speed 60 --seed 7 \
	--system-error-rate 0.03 --drop-after-commit-rate 0.03 --not-found-lag 1s \
	--no-password-limit 500000 --auto-confirm 30s "${product_flags[@]}" \
	--state "$RUN/sandbox-state.json" >"$RUN/sandbox.out" 2>"$RUN/sandbox.log" &
pids+=($!)
wait_for "$RUN/sandbox.out" 20
SANDBOX_URL=$(head -1 "$RUN/sandbox.out" | sed 's/.* on //')
echo "   $SANDBOX_URL"

echo "== starting the processor (embedded JetStream, ledger $RUN/ledger.db)"
DATA_DIR=$RUN SANDBOX_URL=$SANDBOX_URL PRODUCT=$PRODUCT CALLBACK_LISTEN=$CALLBACK_LISTEN NOTIFY_URL=$NOTIFY_URL \
	HTTP_LISTEN=$HTTP_LISTEN ADMIN_TOKEN=$ADMIN_TOKEN "$BIN/processor" run --config configs/demo-processor.yaml 2>"$RUN/processor.log" &
proc=$!
pids+=($proc)
wait_for "$RUN/nats.url" 30
NATS_URL=$(cat "$RUN/nats.url")
echo "   $NATS_URL"

INPUT=testdata/payouts.jsonl
if [ "$PRODUCT" = bills ]; then
	INPUT=$RUN/bills.jsonl
	echo "== generating $INPUT (transfer bills: scenes 1000 and 1005 with their report rows)"
	"$BIN/producer" gen --product bills --count 2000 --seed 11 >"$INPUT"
fi
echo "== publishing $INPUT"
"$BIN/producer" publish --config configs/demo-producer.yaml --product "$PRODUCT" --file "$INPUT" --url "$NATS_URL" >"$RUN/producer.out" 2>"$RUN/producer.log"
cat "$RUN/producer.out"
echo "   (invalid records are listed with their line numbers in $RUN/producer.log)"
published=$(sed -n 's/^published \([0-9]*\).*/\1/p' "$RUN/producer.out")
if [ "$PRODUCT" = bills ]; then
	# Cancel every other payee who will never confirm (an invalid request among them is refused as
	# unknown: it was dead-lettered), and one payout nobody knows.
	mapfile -t cancel < <(grep '"openid":"noconfirm-' "$INPUT" | sed -n 's/.*"out_detail_no":"\([0-9A-Za-z]*\)".*/\1/p' | awk 'NR % 2 == 1')
	echo "== cancelling ${#cancel[@]} unconfirmed payouts and one unknown (payouts.cancel.1900000001)"
	"$BIN/producer" cancel --config configs/demo-producer.yaml --url "$NATS_URL" --mchid 1900000001 "${cancel[@]}" NOSUCHPAYOUT1 >>"$RUN/producer.out" 2>>"$RUN/producer.log"
fi

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
