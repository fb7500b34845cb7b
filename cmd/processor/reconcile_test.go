package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/reconcile"
	"github.com/paystream/paystream/internal/reconcile/reconciletest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// runReconcile runs processor reconcile with args.
func runReconcile(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"reconcile"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// lastLine is the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestCmdReconcile(t *testing.T) {
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 30, FailRate: 0.1}, wechatpaytest.WithFundFlowReturns(true))
	victim := day.Paid[0]
	ghost := filepath.Join(t.TempDir(), "ghost.db")
	ghostLedger(t, ghost)
	bills := filepath.Join(day.Config.DataDir, "bills")
	all := len(day.Paid) + len(day.Failed)

	tests := []struct {
		name     string
		faults   []wechatpaytest.BillFault
		ledgers  []string
		wantCode int
		wantLast string
		wantKey  string // a key the table must name
	}{
		{name: "a clean day", wantCode: 0, wantLast: fmt.Sprintf("reconcile: %d matched, 0 missing, 0 mismatched", all)},
		{name: "missing debit", faults: []wechatpaytest.BillFault{wechatpaytest.BillMissingRow(victim.OutDetailNo)}, wantCode: 1,
			wantLast: fmt.Sprintf("reconcile: %d matched, 1 missing, 0 mismatched", all-1), wantKey: victim.OutDetailNo},
		{name: "extra debit", faults: []wechatpaytest.BillFault{wechatpaytest.BillExtraDebit(time.Now(), 5)}, wantCode: 1,
			wantLast: fmt.Sprintf("reconcile: %d matched, 1 missing, 0 mismatched", all), wantKey: "a debit no payout of ours asked for"},
		{name: "amount off by one fen", faults: []wechatpaytest.BillFault{wechatpaytest.BillAmountOff(victim.OutDetailNo, -1)}, wantCode: 1,
			wantLast: fmt.Sprintf("reconcile: %d matched, 0 missing, 1 mismatched", all-1), wantKey: victim.OutDetailNo},
		{name: "wrong hash", faults: []wechatpaytest.BillFault{wechatpaytest.BillWrongHash}, wantCode: 1,
			wantLast: fmt.Sprintf("reconcile: 0 matched, %d missing, 0 mismatched", len(day.Paid)+1), wantKey: victim.OutDetailNo},
		{name: "a SUCCESS in a ledger the bill lacks", ledgers: []string{day.Config.Ledger, ghost}, wantCode: 1,
			wantLast: fmt.Sprintf("reconcile: %d matched, 1 missing, 0 mismatched", all), wantKey: "GHOST1"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			day.Srv.ClearFaults()
			day.Srv.SpoilFundFlow(tc.faults...)
			report := filepath.Join(t.TempDir(), "report.json")
			args := []string{"--date", day.Date, "--config", day.ConfigFile, "--json", report}
			for _, l := range tc.ledgers {
				args = append(args, "--ledger", l)
			}
			code, out, errOut := runReconcile(t, args...)
			if code != tc.wantCode || lastLine(out) != tc.wantLast || !strings.Contains(out, tc.wantKey) {
				t.Fatalf("exit %d, want %d; last line %q, want %q; key %q in the table?\n%s\nstderr: %s", code, tc.wantCode, lastLine(out), tc.wantLast, tc.wantKey, out, errOut)
			}
			if n := strings.Count(out, "reconcile: "); n != 1 {
				t.Errorf("%d summary lines, want exactly one", n)
			}
			// The JSON report is the one recorded (its SHA-256) in the first ledger, and says the same.
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			var r reconcile.Report
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.Summary() != tc.wantLast {
				t.Errorf("JSON report says %s", r.Summary())
			}
			db, err := ledger.OpenReadOnly(context.Background(), day.Config.Ledger)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			runs, err := db.ReconcileRuns(context.Background(), day.Date)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256(b)
			if len(runs) != i+1 || runs[i].ReportSHA256 != hex.EncodeToString(digest[:]) || runs[i].Missing != r.Missing || runs[i].Mismatched != r.Mismatched {
				t.Fatalf("runs recorded %+v; want run %d with the report's digest and counts", runs, i+1)
			}
			if tc.name == "wrong hash" {
				if runs[i].Bill != ledger.RunBillRefused {
					t.Errorf("bill %s, want refused", runs[i].Bill)
				}
				return
			}
			// The raw file is kept beside its SHA1, and it is the file judged.
			raw, err := os.ReadFile(filepath.Join(bills, "fundflow-"+day.Date+".csv"))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha1.Sum(raw)
			kept, err := os.ReadFile(filepath.Join(bills, "fundflow-"+day.Date+".csv.sha1"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(kept), hex.EncodeToString(sum[:])+"  fundflow-"+day.Date+".csv\n"; got != want || runs[i].BillSHA1 != hex.EncodeToString(sum[:]) {
				t.Errorf(".sha1 %q, run's bill_sha1 %s; want %q", got, runs[i].BillSHA1, want)
			}
		})
	}
	day.Srv.ClearFaults()
	if r, err := ledger.Audit(context.Background(), []string{day.Config.Ledger}, time.Now()); err != nil || !r.OK() {
		t.Fatalf("audit after the runs: %v %+v", err, r)
	}
}

// ghostLedger writes a ledger at path holding one payout (GHOST1) SUCCESS now that no sandbox
// ever paid.
func ghostLedger(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	db, err := ledger.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := ledger.Payout{OutDetailNo: "GHOST1", MchID: wechatpaytest.DefaultMchID, AppID: "wxa0000000000000001", OpenID: "o-ghost",
		Remark: "r", Rail: "direct", GroupKey: wechatpaytest.DefaultMchID + "/direct", Amount: 300, ContentHash: make([]byte, 32), StreamSeq: 1}
	res, err := db.InsertPayouts(ctx, []ledger.Payout{p})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"appid":"wxa0000000000000001","batch_name":"b","batch_remark":"b","out_batch_no":"GB1","total_amount":300,"total_num":1,"transfer_detail_list":[{"openid":"o-ghost","out_detail_no":"GHOST1","transfer_amount":300,"transfer_remark":"r"}]}`
	if err := db.ClaimAndSeal(ctx, ledger.Batch{OutBatchNo: "GB1", Rail: "direct", GroupKey: p.GroupKey, MchID: p.MchID, TotalNum: 1, TotalAmount: 300,
		Body: []byte(body), Members: []int64{res[0].Seq}}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSubmit(ctx, "GB1", ledger.SubmitResult{Outcome: ledger.SubmitAccepted, BatchID: "WGB1", BatchStatus: ledger.BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ApplyDetailPage(ctx, "GB1", ledger.SourceQuery, 0, []ledger.DetailRow{{OutDetailNo: "GHOST1", DetailID: "GD1", Status: ledger.PayoutSuccess}}); err != nil {
		t.Fatal(err)
	}
}

func TestCmdReconcile_NotReady(t *testing.T) {
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 3}, wechatpaytest.WithFundFlowDelay(wechatpaytest.DefaultFundFlowDelay))
	code, out, errOut := runReconcile(t, "--date", day.Date, "--config", day.ConfigFile)
	if code != 2 || out != "" || !strings.Contains(errOut, "not ready yet") || !strings.Contains(errOut, "10:00") {
		t.Fatalf("exit %d (want 2), stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCmdReconcile_Usage(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "not-a-ledger.db")
	if err := os.WriteFile(bad, []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := statusConfig(t, filepath.Join(t.TempDir(), "absent.db"), "127.0.0.1:0")
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no date", args: []string{"--config", cfg}, wantErr: "--date is required"},
		{name: "bad date", args: []string{"--date", "2026-2-30", "--config", cfg}, wantErr: "want YYYY-MM-DD"},
		{name: "unreadable ledger", args: []string{"--date", "2026-03-01", "--config", cfg, "--ledger", bad}, wantErr: "not a readable ledger"},
		{name: "missing ledger", args: []string{"--date", "2026-03-01", "--config", cfg}, wantErr: "absent.db"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runReconcile(t, tc.args...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d (want 2), stdout %q, stderr %q (want %q)", code, out, errOut, tc.wantErr)
			}
		})
	}
}
