package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// metricNames is the canonical list of paystream's metrics, copied from the contract between
// internal/metrics, the status page and these files (deploy/README.md, "Metrics"). A rename
// on one side fails TestMetricNames here; a name missing from the registry is the lead's
// check.
var metricNames = map[string]metricType{
	// Counters.
	"paystream_intake_received_total":              counter,
	"paystream_intake_committed_total":             counter,
	"paystream_intake_duplicates_total":            counter,
	"paystream_intake_handed_back_total":           counter,
	"paystream_intake_dead_lettered_total":         counter,   // {class}
	"paystream_intake_stage_seconds_total":         counter,   // {stage}
	"paystream_wechatpay_requests_total":           counter,   // {endpoint,class}
	"paystream_wechatpay_throttled_total":          counter,   // {endpoint}
	"paystream_outcomes_published_total":           counter,   // {kind}
	"paystream_claims_errors_total":                counter,   // {op}
	"paystream_batches_finished_total":             counter,   // {rail,state}
	"paystream_wechatpay_request_duration_seconds": histogram, // {endpoint}
	"paystream_rate_limiter_wait_seconds":          histogram, // {api}
	"paystream_outcome_publish_lag_seconds":        histogram,
	"paystream_ledger_commit_seconds":              histogram,
	"paystream_claims_seconds":                     histogram, // {op}
	// Gauges.
	"paystream_breaker_state":                 gauge, // {breaker}: 0 closed, 1 half-open, 2 open
	"paystream_consumer_pending_messages":     gauge,
	"paystream_consumer_ack_pending_messages": gauge,
	"paystream_consumer_redelivered_messages": gauge,
	"paystream_payouts":                       gauge, // {state}
	"paystream_payouts_amount_fen":            gauge, // {state}
	"paystream_paid_fen":                      gauge,
	"paystream_batches":                       gauge, // {rail,state}
	"paystream_parked":                        gauge, // {kind,code}
	"paystream_oldest_open_batch_age_seconds": gauge,
	"paystream_outbox_pending":                gauge, // {kind}
	"paystream_ledger_up":                     gauge,
	"paystream_ready":                         gauge,
	"paystream_instances_silent":              gauge,
	"paystream_stage_busy_seconds":            gauge, // {stage}
	"paystream_build_info":                    gauge, // {version}
}

type metricType int

const (
	counter metricType = iota
	gauge
	histogram
)

// seriesNames are the series names PromQL may use: a histogram is only its _bucket, _sum
// and _count series; up is Prometheus's own.
func seriesNames() map[string]bool {
	names := map[string]bool{"up": true}
	for n, typ := range metricNames {
		if typ == histogram {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
			continue
		}
		names[n] = true
	}
	return names
}

var paystreamName = regexp.MustCompile(`\b(paystream_[a-z0-9_]+|up)\b`)

// promtool finds promtool, or skips the test saying how to install it; under CI=true a
// missing promtool fails the test (.ci/run installs it).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	const msg = "promtool not found: install Debian's prometheus package: apt-get install prometheus"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestPromtool checks the rules, runs their unit tests (a parked NOT_ENOUGH batch fires, …)
// and checks the example Prometheus config.
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Dir = "prometheus"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
	// The dashboard's queries parse as PromQL: promtool checks them as recording rules, with
	// Grafana's variables replaced by values and label_values(m, l) (Grafana's) by m.
	t.Run("dashboard queries", func(t *testing.T) {
		grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
		labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
		var rules strings.Builder
		rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, e := range dashboardExprs(t) {
			e = labelValues.ReplaceAllString(grafanaVars.Replace(e), "$1")
			q, err := json.Marshal(e) // a JSON string is a YAML string
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
		}
		path := filepath.Join(t.TempDir(), "dashboard.yml")
		if err := os.WriteFile(path, []byte(rules.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "check", "rules", path).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules (the dashboard's queries): %v\n%s", err, out)
		}
	})
}

// dashboardExprs reads grafana/paystream.json and returns its PromQL queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("grafana/paystream.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/paystream.json: %v", err)
	}
	out := exprs(dash)
	if len(out) == 0 {
		t.Fatal("grafana/paystream.json: no queries")
	}
	return out
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			AlertName string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertTests_CoverEveryRule: every alert has a unit test where it fires and one where it
// does not, so a rule added without tests fails here (promtool itself does not care).
func TestAlertTests_CoverEveryRule(t *testing.T) {
	var rules ruleFile
	var tests ruleTests
	readYAML(t, "prometheus/alerts.yml", &rules)
	readYAML(t, "prometheus/alerts_test.yml", &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.AlertName] = true
			} else {
				quiet[at.AlertName] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s: no test where it does not fire", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts in prometheus/alerts.yml")
	}
}

// exprs returns every PromQL string in a JSON document: the panels' targets ("expr") and
// the template variables' label_values queries.
func exprs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && (k == "expr" || k == "query" && strings.Contains(s, "(")) {
				out = append(out, s)
			} else {
				out = append(out, exprs(e)...)
			}
		}
	case []any:
		for _, e := range x {
			out = append(out, exprs(e)...)
		}
	}
	return out
}

// TestDashboard: the dashboard is Grafana JSON with a data source variable that every panel
// and query uses (so it imports into any Grafana with a Prometheus source), and unique panel ids.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/paystream.json")
	if err != nil {
		t.Fatal(err)
	}
	type ds struct{ Type, UID string }
	type variable struct {
		Name, Type string
		Query      any // a string, or an object for query variables
	}
	var dash struct {
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []variable
		}
		Panels []struct {
			ID         int
			Type       string
			Title      string
			Datasource *ds
			Targets    []struct {
				Expr       string
				Datasource *ds
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/paystream.json: %v", err)
	}
	if dash.UID == "" || dash.SchemaVersion < 39 {
		t.Errorf("uid %q, schemaVersion %d: want a uid and schemaVersion ≥ 39", dash.UID, dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v variable) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("no Prometheus data source variable named datasource")
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: want datasource ${datasource} and queries", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query %q not on ${datasource}", p.Title, tg.Expr)
			}
		}
	}
}

// TestMetricNames: the rules and the dashboard use only names of the contract (a histogram
// through its _bucket/_sum/_count series), and the dashboard shows every metric of it.
func TestMetricNames(t *testing.T) {
	known := seriesNames()
	check := func(where, expr string) []string {
		t.Helper()
		found := paystreamName.FindAllString(expr, -1)
		if len(found) == 0 {
			t.Errorf("%s: %q uses no paystream metric", where, expr)
		}
		for _, name := range found {
			if !known[name] {
				t.Errorf("%s: %q uses %s, not a paystream metric (deploy_test.go metricNames)", where, expr, name)
			}
		}
		return found
	}

	var rules ruleFile
	readYAML(t, "prometheus/alerts.yml", &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			check("alert "+r.Alert, r.Expr)
		}
	}

	shown := map[string]bool{}
	for _, e := range dashboardExprs(t) {
		for _, name := range check("dashboard", e) {
			shown[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] = true
		}
	}
	var missing []string
	for n := range metricNames {
		if !shown[n] {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("grafana/paystream.json shows no panel for %v", missing)
	}
}
