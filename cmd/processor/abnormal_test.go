package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/reconcile/reconciletest"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// abnormalConfig writes the key files and a processor config against srv; it returns the
// config file and the ledger path.
func abnormalConfig(t *testing.T, srv *wechatpaytest.Server) (cfgFile, ledgerPath string) {
	t.Helper()
	cfg, file := reconciletest.Config(t, srv, synth.ProductBatches)
	return file, cfg.Ledger
}

// runAbnormal runs processor abnormal-fund in this process.
func runAbnormal(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"abnormal-fund"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCmdAbnormal(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(1000), wechatpaytest.WithRateLimit(0))
	srv.AddReceipt("R1", 1234)
	srv.AddReceipt("R2", 99)
	cfg, _ := abnormalConfig(t, srv)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
	}{
		{name: "transfer", args: []string{"transfer", "--config", cfg, "--receipt", "R1", "--appid", wechatpaytest.DefaultAppID, "--poll", "5ms"},
			wantCode: 0, wantOut: []string{"R1", "RECEIPT_STATE_COMPLETED", "1234", "abnormal-fund: 1 instructions"}},
		{name: "transfer again: the same instruction", args: []string{"transfer", "--config", cfg, "--receipt", "R1", "--appid", wechatpaytest.DefaultAppID, "--poll", "5ms"},
			wantCode: 0, wantOut: []string{"RECEIPT_STATE_COMPLETED"}},
		{name: "other app ids while one is live", args: []string{"transfer", "--config", cfg, "--receipt", "R1", "--appid", "wxother"}, wantCode: 2},
		{name: "unknown receipt", args: []string{"transfer", "--config", cfg, "--receipt", "R404", "--appid", wechatpaytest.DefaultAppID}, wantCode: 1,
			wantOut: []string{"REJECTED", "NOT_FOUND"}},
		{name: "list with WeChat's answers", args: []string{"list", "--config", cfg, "--receipt", "R1", "--receipt", "R2"}, wantCode: 0,
			wantOut: []string{"abnormal-fund: 2 instructions", "WECHAT STATE", "RECEIPT_STATE_PENDING"}},
		{name: "resume with nothing open", args: []string{"resume", "--config", cfg}, wantCode: 0, wantOut: []string{"abnormal-fund: 0 instructions"}},
		{name: "transfer without appid", args: []string{"transfer", "--config", cfg, "--receipt", "R1"}, wantCode: 2},
		{name: "unknown subcommand", args: []string{"cancel"}, wantCode: 2},
		{name: "no poll interval", args: []string{"resume", "--config", cfg, "--poll", "0s"}, wantCode: 2},
		{name: "no time to follow", args: []string{"transfer", "--config", cfg, "--receipt", "R2", "--appid", wechatpaytest.DefaultAppID, "--wait", "0s"}, wantCode: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAbnormal(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\n%s\nstderr: %s", code, tc.wantCode, out, errOut)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s\nstderr: %s", w, out, errOut)
				}
			}
		})
	}
	if got := srv.Instructions(); len(got) != 1 || got[0].ReceiptID != "R1" {
		t.Fatalf("sandbox holds %+v, want one instruction for R1", got)
	}
}

// TestAbnormal_SIGKILL is issue 15's acceptance test: an abnormal-fund instruction survives a
// SIGKILL of the processor between record and send, and between send and answer, with
// exactly one instruction at the sandbox, under the ledger's number, final.
func TestAbnormal_SIGKILL(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "processor")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		name  string
		at    wechatpaytest.HoldPoint
		again []string // the command run after the kill
	}{
		{name: "between record and send, then transfer again", at: wechatpaytest.HoldBeforeCommit,
			again: []string{"transfer", "--receipt", "R1", "--appid", wechatpaytest.DefaultAppID}},
		{name: "between send and answer, then resume", at: wechatpaytest.HoldAfterCommit, again: []string{"resume"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(1000), wechatpaytest.WithRateLimit(0))
			srv.AddReceipt("R1", 1234)
			cfg, ledgerPath := abnormalConfig(t, srv)
			held, release := srv.HoldInstr(tc.at)
			t.Cleanup(release)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			first := exec.CommandContext(ctx, bin, "abnormal-fund", "transfer", "--config", cfg, "--receipt", "R1",
				"--appid", wechatpaytest.DefaultAppID, "--poll", "5ms")
			first.Stdout, first.Stderr = &out, &out
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-held:
			case <-ctx.Done():
				t.Fatalf("the create never reached the sandbox\n%s", out.String())
			}
			if err := first.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := first.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("the first run was not killed: %v\n%s", err, out.String())
			}

			// The instruction was committed before the send, with its number.
			db, err := ledger.OpenInstructions(context.Background(), ledgerPath)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			recorded, err := db.Open(context.Background())
			if err != nil || len(recorded) != 1 || recorded[0].State != ledger.InstrRecorded || recorded[0].Attempts != 1 {
				t.Fatalf("ledger after the kill: %+v, %v; want one RECORDED instruction, one attempt", recorded, err)
			}
			no := recorded[0].OutInstructionNo
			if tc.at == wechatpaytest.HoldBeforeCommit && len(srv.Instructions()) != 0 {
				t.Fatalf("the sandbox committed a create held before commit: %+v", srv.Instructions())
			}

			again := exec.CommandContext(ctx, bin, append(append([]string{"abnormal-fund"}, tc.again...), "--config", cfg, "--poll", "5ms")...)
			b, err := again.CombinedOutput()
			if err != nil {
				t.Fatalf("%s after the kill: %v\n%s", tc.again[0], err, b)
			}
			if !strings.Contains(string(b), no) || !strings.Contains(string(b), ledger.InstrCompleted) {
				t.Fatalf("%s printed no COMPLETED %s:\n%s", tc.again[0], no, b)
			}
			got := srv.Instructions()
			if len(got) != 1 || got[0].ReceiptID != "R1" || got[0].OutInstructionNo != no || got[0].State != ledger.InstrCompleted {
				t.Fatalf("sandbox holds %+v; want exactly one COMPLETED instruction for R1 numbered %s", got, no)
			}
			in, err := db.Find(context.Background(), "R1", no)
			if err != nil || in.State != ledger.InstrCompleted || in.Amount != 1234 {
				t.Fatalf("ledger: %+v, %v", in, err)
			}
			if all, _ := db.All(context.Background()); len(all) != 1 {
				t.Fatalf("ledger holds %d instructions, want 1", len(all))
			}
			r, err := ledger.Audit(context.Background(), []string{ledgerPath}, time.Now())
			if err != nil || !r.OK() {
				t.Fatalf("audit: %v %+v", err, r)
			}
		})
	}
}
