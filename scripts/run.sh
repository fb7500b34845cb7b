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
. scripts/lib.sh
PRODUCT=${PRODUCT:-batches}
trap stop_all EXIT
HTTP_LISTEN=${HTTP_LISTEN:-"127.0.0.1:$(free_port 18191)"}
ADMIN_TOKEN=${ADMIN_TOKEN:-"demo-admin-token-not-a-secret"}
start_demo

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
echo "== reconciling today (China time) with the sandbox's fund-flow bill (docs/reconciliation.md)"
"$BIN/processor" reconcile --date "$(TZ=Asia/Shanghai date +%F)" --config "$RUN/processor.yaml" 2>>"$RUN/processor.log"
echo "== auditing the ledger"
"$BIN/processor" audit --ledger "$RUN/ledger.db"
echo
echo "done: ledger at $RUN/ledger.db (open it with sqlite3), logs in $RUN/"
