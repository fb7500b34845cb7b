package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/pkg/ledger"
)

// auditLedger writes a small healthy ledger file and returns its path.
func auditLedger(t *testing.T, key string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.InsertPayouts(context.Background(), []ledger.Payout{{OutDetailNo: key, MchID: "1900000109",
		OpenID: "o1", Remark: "r", Rail: "direct", Amount: 100, ContentHash: []byte{1}}}); err != nil {
		t.Fatal(err)
	}
	return path
}

// duplicateLedger writes a ledger with n DUPLICATE payouts whose owner has no ledger here.
func duplicateLedger(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ps := make([]ledger.Payout, n)
	for i := range ps {
		ps[i] = ledger.Payout{OutDetailNo: fmt.Sprintf("d%d", i), MchID: "1900000109", OpenID: "o1", Remark: "r",
			Rail: "direct", Amount: 100, ContentHash: []byte{1}}
	}
	res, err := db.InsertPayouts(ctx, ps)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if err := db.MarkDuplicate(ctx, r.Seq, "Gone000001", false); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func runAudit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"audit"}, args...), os.Getenv, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCmdAudit(t *testing.T) {
	a, b := auditLedger(t, "k1"), auditLedger(t, "k1")
	tampered := auditLedger(t, "k2")
	raw, err := sql.Open("sqlite3", tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE payouts SET amount = 5`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{name: "clean", args: []string{"--ledger", a}, wantCode: 0, wantOut: "clean"},
		{name: "tampered amount", args: []string{"--ledger", tampered}, wantCode: 1, wantOut: "payouts seq=1 out_detail_no=k2"},
		{name: "same key in two files", args: []string{"--ledger", a, "--ledger", b}, wantCode: 1, wantOut: "cross_file_keys"},
		{name: "owner's ledger not given", args: []string{"--ledger", duplicateLedger(t, 1)}, wantCode: 1,
			wantOut: "owned by instance Gone000001, whose ledger is not among the files audited"},
		{name: "examples capped", args: []string{"--ledger", duplicateLedger(t, ledger.MaxExamples+5)}, wantCode: 1,
			wantOut: "25 VIOLATIONS (5 more not listed)"},
		{name: "missing file", args: []string{"--ledger", filepath.Join(t.TempDir(), "none.db")}, wantCode: 2},
		{name: "no ledger flag", args: nil, wantCode: 2},
		{name: "unknown flag", args: []string{"--nope"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runAudit(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Fatalf("stdout does not contain %q:\n%s", tt.wantOut, out)
			}
		})
	}
}

func TestCmdAudit_JSON(t *testing.T) {
	code, out, _ := runAudit(t, "--json", "--ledger", auditLedger(t, "k1"))
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var r ledger.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(r.Files) != 1 || len(r.Checks) < 10 || len(r.Violations) != 0 {
		t.Fatalf("report = %+v", r)
	}
}

func TestCmdAudit_JSONOmitted(t *testing.T) {
	code, out, _ := runAudit(t, "--json", "--ledger", duplicateLedger(t, ledger.MaxExamples+5))
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	var r struct {
		Checks     []map[string]any   `json:"checks"`
		Violations []ledger.Violation `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, c := range r.Checks {
		if _, ok := c["omitted"]; !ok {
			t.Fatalf("check %v has no \"omitted\"", c)
		}
		if c["name"] == "owner_missing" {
			if got, want := fmt.Sprint(c["violations"], " ", c["omitted"]), "25 5"; got != want {
				t.Fatalf("owner_missing violations, omitted = %s, want %s", got, want)
			}
		}
	}
	if got, want := len(r.Violations), ledger.MaxExamples; got != want {
		t.Fatalf("%d violations listed, want %d", got, want)
	}
}
