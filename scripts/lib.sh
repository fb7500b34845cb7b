# shellcheck shell=bash
# scripts/lib.sh: what run.sh (make run) and up.sh (make up) share: a fresh .run/ with the
# WeChat Pay sandbox and one processor on configs/demo-processor.yaml. Source it from the
# repository root with `set -euo pipefail` on, after setting PRODUCT, HTTP_LISTEN and
# ADMIN_TOKEN.
RUN=.run
BIN=bin
pids=()

# stop_all: TERM every process started here, then wait for them (an EXIT trap).
stop_all() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}

# wait_for FILE SECONDS: until FILE exists and is not empty.
wait_for() {
	for _ in $(seq $(($2 * 10))); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	echo "$1 did not appear within $2 s" >&2
	return 1
}

# listening HOST:PORT: whether something accepts connections there.
listening() {
	(exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# free_port [first]: a free loopback port from first (default 18088) on.
free_port() {
	local first=${1:-18088}
	for port in $(seq "$first" $((first + 100))); do
		if ! listening "127.0.0.1:$port"; then
			echo "$port"
			return 0
		fi
	done
	echo "no free port in $first..$((first + 100))" >&2
	return 1
}

# http_status HOST:PORT PATH: the status code of GET PATH, 000 when nothing answers (bash's
# /dev/tcp: curl may not be installed).
http_status() {
	(
		exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
		read -r -t 5 _ code _ <&3 && echo "$code"
	) 2>/dev/null || echo 000
}

# wait_ready HOST:PORT SECONDS: until GET /readyz answers 200.
wait_ready() {
	for _ in $(seq $(($2 * 10))); do
		[ "$(http_status "$1" /readyz)" = 200 ] && return 0
		sleep 0.1
	done
	return 1
}

# resolve_config SRC DST: SRC with every ${VAR} replaced by that shell variable's value (each
# must be set), so the CLI tools can read the processor's config without its environment.
resolve_config() {
	local line name out=()
	while IFS= read -r line || [ -n "$line" ]; do
		while [[ $line =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
			name=${BASH_REMATCH[1]}
			if [ -z "${!name-}" ]; then
				echo "$1: \${$name} is not set" >&2
				return 1
			fi
			line=${line//"\${$name}"/"${!name}"}
		done
		out+=("$line")
	done <"$1"
	printf '%s\n' "${out[@]}" >"$2"
}

# start_demo: a fresh $RUN; the sandbox (PRODUCT's merchant, fast clock, a few faults) and a
# processor on configs/demo-processor.yaml (embedded JetStream, ledger $RUN/ledger.db, the
# operator's HTTP listener on HTTP_LISTEN). Sets SANDBOX_URL, NATS_URL and proc (the
# processor's pid) and writes $RUN/sandbox.url, $RUN/nats.url (the processor does) and
# $RUN/processor.yaml (the demo config with its values filled in).
start_demo() {
	rm -rf "$RUN" "$RUN-replica"
	mkdir -p "$RUN"
	# The ledger is replicated by litestream, a child of the processor, into a directory beside
	# $RUN (docs/replication.md): delete $RUN and start again, and the ledger comes back.
	"${MAKE:-make}" --no-print-directory litestream >/dev/null
	LITESTREAM=bin/litestream-v0.5.18/litestream
	REPLICA_URL="file://$(pwd)/$RUN-replica"
	# The merchant key must be 0600 (git does not keep modes).
	install -m 600 testdata/testvectors/merchant_TEST_ONLY_private_key.pem "$RUN/"

	# Callbacks on for both products: the sandbox notifies this listener (a fifth of the
	# notifications lost, so the queries' sweep has work too). Its URL goes into every batch
	# and bill, so it is fixed before the processor starts.
	CALLBACK_LISTEN="127.0.0.1:$(free_port)"
	NOTIFY_URL="http://$CALLBACK_LISTEN/wechatpay/notify"
	DATA_DIR=$RUN
	local product_flags=(--product "$PRODUCT" --notify-loss 0.2)
	if [ "$PRODUCT" = bills ]; then
		product_flags+=(--bill-auto-confirm 20s --bill-accept-delay 0s --bill-confirm-timeout 30m --bill-close-lag 2m)
	fi

	echo "== starting the WeChat Pay sandbox ($PRODUCT merchant, TEST-ONLY keys, 60x clock, 3% SYSTEM_ERROR, 3% commit-then-drop)"
	# Its fund-flow bills are served at once (WeChat's come at 10:00 the next day), so the run
	# can reconcile the day it ran.
	"$BIN/sandbox" --listen 127.0.0.1:0 --admin --speed 60 --seed 7 --fund-flow-ready 0s \
		--system-error-rate 0.03 --drop-after-commit-rate 0.03 --not-found-lag 1s \
		--no-password-limit 500000 --auto-confirm 30s "${product_flags[@]}" \
		--state "$RUN/sandbox-state.json" >"$RUN/sandbox.out" 2>"$RUN/sandbox.log" &
	pids+=($!)
	wait_for "$RUN/sandbox.out" 20
	SANDBOX_URL=$(head -1 "$RUN/sandbox.out" | sed 's/.* on //')
	echo "$SANDBOX_URL" >"$RUN/sandbox.url"
	echo "   $SANDBOX_URL"

	resolve_config configs/demo-processor.yaml "$RUN/processor.yaml"
	echo "== starting the processor (embedded JetStream, ledger $RUN/ledger.db)"
	DATA_DIR=$DATA_DIR SANDBOX_URL=$SANDBOX_URL PRODUCT=$PRODUCT CALLBACK_LISTEN=$CALLBACK_LISTEN NOTIFY_URL=$NOTIFY_URL \
		HTTP_LISTEN=$HTTP_LISTEN ADMIN_TOKEN=$ADMIN_TOKEN REPLICA_URL=$REPLICA_URL LITESTREAM=$LITESTREAM "$BIN/processor" run --config configs/demo-processor.yaml 2>"$RUN/processor.log" &
	proc=$!
	pids+=("$proc")
	if ! wait_for "$RUN/nats.url" 30; then
		tail -20 "$RUN/processor.log" >&2
		return 1
	fi
	NATS_URL=$(cat "$RUN/nats.url")
	echo "   $NATS_URL"
}
