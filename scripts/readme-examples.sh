#!/usr/bin/env bash
# make readme-check: runs every CLI example of README.md, as written, against make up. It
# starts scripts/up.sh in the background, waits until the processor's /readyz answers 200,
# takes each line of README.md's ```sh blocks that starts with bin/ or sqlite3, runs it with
# bash from the repository root, and fails if any exits non-zero; then it stops up.sh.
# An example holding a placeholder ("…") cannot run as written: it must be listed in skip
# below with the reason, or the check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HTTP_LISTEN=${HTTP_LISTEN:-127.0.0.1:8091}

# skip: examples not run, by their first words, with why.
declare -A skip=(
	# ["bin/processor api --dry-run"]="needs a body file of your own"
)
examples() {
	awk '/^```sh[[:space:]]*$/ { in_sh = 1; next } /^```/ { in_sh = 0 } in_sh && /^(bin\/|sqlite3 )/' README.md
}
skipped() { # LINE: the reason it is skipped, if it is
	local prefix
	for prefix in "${!skip[@]}"; do
		if [[ $1 == "$prefix"* ]]; then
			echo "${skip[$prefix]}"
			return 0
		fi
	done
	if [[ $1 == *sqlite3* ]] && ! command -v sqlite3 >/dev/null; then
		echo "sqlite3 is not installed"
		return 0
	fi
	return 1
}

mapfile -t lines < <(examples)
if [ "${#lines[@]}" -eq 0 ]; then
	echo "readme-check: no examples found in README.md" >&2
	exit 1
fi
for line in "${lines[@]}"; do
	if [[ $line == *…* ]] && ! skipped "$line" >/dev/null; then
		echo "readme-check: this example has a placeholder (…) and cannot run as written; make it runnable or list it in skip in $0 with the reason:" >&2
		echo "  $line" >&2
		exit 1
	fi
done

created_jsonl=
[ -e my.jsonl ] || created_jsonl=my.jsonl # the gen example writes it
log=$(mktemp)
up_pid=
finish() {
	if [ -n "$up_pid" ]; then
		kill -TERM "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
	fi
	[ -z "$created_jsonl" ] || rm -f "$created_jsonl"
	rm -f "$log"
}
trap finish EXIT

echo "== make up (scripts/up.sh) in the background"
HTTP_LISTEN=$HTTP_LISTEN scripts/up.sh >"$log" 2>&1 &
up_pid=$!
for _ in $(seq 1200); do # the build, then the start: 120 s at most
	grep -q '^paystream is up' "$log" && break
	kill -0 "$up_pid" 2>/dev/null || break
	sleep 0.1
done
if ! grep -q '^paystream is up' "$log"; then
	echo "readme-check: make up did not come up:" >&2
	cat "$log" >&2
	exit 1
fi
if ! wait_ready "$HTTP_LISTEN" 60; then
	echo "readme-check: http://$HTTP_LISTEN/readyz did not answer 200 within 60 s" >&2
	tail -20 .run/processor.log >&2
	exit 1
fi

# accepted_batch: wait until WeChat Pay (the sandbox) has accepted a batch, which an example
# querying one needs: the intake and the batching take a moment after a publish.
accepted_batch() {
	for _ in $(seq 600); do
		if bin/processor summary --ledger .run/ledger.db 2>/dev/null |
			awk '$2 ~ /^(ACCEPTED|PROCESSING|FINISHED)$/ { n += $1 } END { exit !(n > 0) }'; then
			return 0
		fi
		sleep 0.1
	done
	echo "readme-check: no batch accepted within 60 s of the publish" >&2
	return 1
}

failed=0
ran=0
for line in "${lines[@]}"; do
	if reason=$(skipped "$line"); then
		echo "-- skipped ($reason): $line"
		continue
	fi
	echo "-- $line"
	out=$(timeout 300 bash -euo pipefail -c "$line" 2>&1) && code=0 || code=$?
	ran=$((ran + 1))
	if [ "$code" -ne 0 ]; then
		echo "FAIL (exit $code):" >&2
		printf '%s\n' "$out" | tail -20 >&2
		failed=$((failed + 1))
	else
		printf '%s\n' "$out" | sed -n '1,5s/^/   /p' # sed reads it all: no SIGPIPE under pipefail
	fi
	if [[ $line == "bin/producer publish"* ]] && [ "$code" -eq 0 ]; then
		accepted_batch
	fi
done
echo "== $ran examples run, $failed failed"
[ "$failed" -eq 0 ]
