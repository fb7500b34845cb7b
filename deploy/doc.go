// Package deploy holds the files an operator runs paystream with, none of them Go: Prometheus
// alert rules and their promtool unit tests (prometheus/), a Grafana dashboard (grafana/), a
// three-node NATS cluster with one processor config per node (nats/) and systemd units
// (systemd/). See deploy/README.md.
//
// The package has no code; its tests check those files: the rules pass `promtool check rules`
// and `promtool test rules`, the rules and the dashboard use only the metric names of the
// contract (docs in deploy/README.md), and every processor config parses with
// internal/app.LoadConfig. configs/processor.yaml is also started, as shipped, on a
// temporary directory.
package deploy
