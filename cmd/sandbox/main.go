// Command sandbox serves the WeChat Pay APIv3 sandbox of pkg/wechatpay/wechatpaytest on a
// local port, for `make run`, end-to-end scripts and soaks. It verifies signatures, signs
// its answers with the TEST-ONLY platform key, keeps batches (optionally in a --state file
// that survives restarts), injects faults and, with --admin, serves its own record of what
// it paid under /sandbox/.
//
//	sandbox --listen 127.0.0.1:0 --admin --state /tmp/sandbox.json --speed 10
//
// The first line on stdout is "sandbox listening on http://HOST:PORT". On SIGINT/SIGTERM it
// stops, saves the state and prints its counters (requests, injected faults) on stderr.
// Run `sandbox --help` for every flag.
package main

import "github.com/paystream/paystream/internal/cli"

func main() { cli.Main(run) }
