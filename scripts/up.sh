#!/usr/bin/env bash
# make up: the WeChat Pay sandbox and one processor on the demo config, in the foreground until
# Ctrl-C, for trying the README's CLI examples and the status page by hand. It builds bin/,
# starts both like make run does (a fresh .run/: the ledger at .run/ledger.db, logs in .run/),
# prints where everything is and what to try next, and publishes nothing itself.
#
#	PRODUCT=bills      the transfer-bills merchant (default batches)
#	HTTP_LISTEN=H:P    the status page, /metrics, /livez and /readyz (default 127.0.0.1:8091)
#	ADMIN_TOKEN=T      the page's admin token (default a fixed demo value, printed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
PRODUCT=${PRODUCT:-batches}
HTTP_LISTEN=${HTTP_LISTEN:-127.0.0.1:8091}
ADMIN_TOKEN=${ADMIN_TOKEN:-demo-admin-token-not-a-secret}
if listening "$HTTP_LISTEN"; then
	echo "up: something already listens on $HTTP_LISTEN (another make up?); choose another: HTTP_LISTEN=127.0.0.1:8092 make up" >&2
	exit 1
fi

echo "== building bin/"
"${MAKE:-make}" --no-print-directory build >/dev/null
trap stop_all EXIT
trap 'echo; echo "== stopping"; exit 0' INT TERM
start_demo

ready="(/readyz answers 200)"
if ! wait_ready "$HTTP_LISTEN" 30; then
	ready="(NOT READY: /readyz did not answer 200 within 30 s; see $RUN/processor.log)"
fi
publish_flags=
gen_flags=
if [ "$PRODUCT" = bills ]; then
	publish_flags=" --product bills"
	gen_flags=" --product bills"
fi
cat <<MSG

paystream is up on the $PRODUCT product; Ctrl-C stops it.
  NATS               $NATS_URL   (also in $RUN/nats.url)
  WeChat Pay sandbox $SANDBOX_URL   (TEST-ONLY keys; its own record under /sandbox/)
  status page        http://$HTTP_LISTEN/   $ready
  metrics            http://$HTTP_LISTEN/metrics
  admin token        $ADMIN_TOKEN   (a demo value: the page's retry and cancel buttons)
  ledger             $RUN/ledger.db; logs in $RUN/*.log; the processor's config with its values: $RUN/processor.yaml

Try, in another terminal:
  bin/producer gen$gen_flags --count 10000 --seed 3 > my.jsonl
  bin/producer publish --config configs/demo-producer.yaml$publish_flags --file my.jsonl --url "\$(cat $RUN/nats.url)"
  bin/processor summary --ledger $RUN/ledger.db --wait 5m
  bin/processor audit --ledger $RUN/ledger.db
  (README.md, "Running it", has the rest)
MSG

# Until Ctrl-C, or until one of them stops by itself.
set +e
wait -n "${pids[@]}"
code=$?
set -e
echo "up: a process stopped by itself (exit $code); the last lines of its log:" >&2
tail -5 "$RUN/sandbox.log" "$RUN/processor.log" >&2
exit 1
