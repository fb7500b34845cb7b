package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestConfigs parses every processor config shipped in configs/.
func TestConfigs(t *testing.T) {
	env := map[string]string{
		"WECHATPAY_MCHID": "1900000001", "WECHATPAY_SERIAL_NO": "SERIAL", "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_1",
		"WECHATPAY_APIV3_KEY": "0123456789abcdef0123456789abcdef", "DATA_DIR": t.TempDir(), "SANDBOX_URL": "http://127.0.0.1:1",
		"PRODUCT": "bills", "CALLBACK_LISTEN": "127.0.0.1:0", "NOTIFY_URL": "http://127.0.0.1:1/wechatpay/notify",
		"HTTP_LISTEN": "127.0.0.1:0", "ADMIN_TOKEN": "0123456789abcdef", "REPLICA_URL": "file:///var/backup/paystream",
		"LITESTREAM": "bin/litestream-v0.5.18/litestream",
	}
	paths, err := filepath.Glob("../../configs/*processor*.yaml")
	if err != nil || len(paths) < 2 {
		t.Fatalf("processor configs: %v %v", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if _, err := app.LoadConfig(p, func(k string) string { return env[k] }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRun_Set: processor run --set KEY=VALUE overrides the config file, a later --set of a key
// wins, and a bad value or key is refused (exit 2) naming its key path. The config is never
// valid here, so the pipeline does not start: which error is reported shows which value won.
func TestRun_Set(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "processor.yaml")
	yaml := "data-dir: " + dir + "\nwechatpay:\n  mchid: \"1900000001\"\n  merchant-serial-no: S\n  private-key-file: k.pem\n" +
		"  wechatpay-public-key-file: p.pem\n  apiv3-key: 0123456789abcdef0123456789abcdef\npipeline:\n  poll:\n    page-limit: 500\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		sets    []string
		wantErr string // in stderr; exit 2
	}{
		{"the file's bad value", nil, "pipeline.poll.page-limit = 500"},
		{"a --set beats the file", []string{"pipeline.poll.page-limit=50", "log.format=xml"}, "log.format = xml"},
		{"the last --set wins", []string{"pipeline.poll.page-limit=50", "log.format=xml", "log.format=json", "log.level=loud"}, "log.level = loud"},
		{"a bad --set", []string{"pipeline.poll.page-limit=5000"}, "pipeline.poll.page-limit = 5000"},
		{"a --set of the wrong type", []string{"pipeline.poll.interval=soon"}, `pipeline.poll.interval: cannot use "soon" as a duration`},
		{"a --set of no key", []string{"pipeline.poll.nope=1"}, "pipeline.poll.nope: unknown key (command line)"},
		{"a --set without =", []string{"pipeline.poll.page-limit"}, "want KEY=VALUE"},
		{"a --set without a key", []string{"=1"}, "want KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"run", "--config", path}
			for _, s := range tt.sets {
				args = append(args, "--set", s)
			}
			var out, errOut strings.Builder
			code := run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
			if got, want := code, 2; got != want {
				t.Fatalf("exit %d, want %d; stderr %q", got, want, errOut.String())
			}
			if got := errOut.String(); !strings.Contains(got, tt.wantErr) {
				t.Fatalf("stderr %q, want it to say %q", got, tt.wantErr)
			}
		})
	}
}

// TestAPI_Config: processor api --config takes keys and ids from the processor config and
// talks to the sandbox, which verifies the signature.
func TestAPI_Config(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	dir := t.TempDir()
	key := copyFile(t, dir, "merchant_TEST_ONLY_private_key.pem", 0o600)
	pub := copyFile(t, dir, "wechatpay_platform_TEST_ONLY_public_key.pem", 0o644)
	cfg := filepath.Join(dir, "processor.yaml")
	yaml := fmt.Sprintf(`data-dir: %s
wechatpay:
  base-url: %s
  mchid: "%s"
  merchant-serial-no: %s
  private-key-file: %s
  wechatpay-public-key-file: %s
  wechatpay-public-key-id: %s
  apiv3-key: ${APIV3}
`, dir, srv.URL(), wechatpaytest.DefaultMchID, wechatpaytest.DefaultMerchantSerial, key, pub, wechatpaytest.DefaultPlatformKeyID)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "APIV3" {
			return wechatpaytest.DefaultAPIv3Key
		}
		return ""
	}
	call := func(args ...string) (int, string, string) {
		var out, errOut strings.Builder
		code := run(context.Background(), append([]string{"api", "--config", cfg}, args...), getenv, strings.NewReader(""), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	body := `{"appid":"wxa0000000000000001","batch_name":"n","batch_remark":"r","out_batch_no":"APICFG1","total_amount":100,"total_num":1,"transfer_detail_list":[{"openid":"o1","out_detail_no":"D1","transfer_amount":100,"transfer_remark":"r"}]}`
	if code, out, errOut := call("POST", "/v3/transfer/batches", "--data", body); code != 0 || !strings.Contains(out, `"out_batch_no": "APICFG1"`) {
		t.Fatalf("create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := call("GET", "/v3/transfer/batches/out-batch-no/NOSUCH?need_query_detail=false"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("query: exit %d, stderr %q; want 1 and class not_found", code, errOut)
	}
	if code, _, errOut := call("--mchid", "1900000002", "GET", "/v3/transfer/batches/out-batch-no/APICFG1?need_query_detail=false"); code != 1 || !strings.Contains(errOut, "SIGN_ERROR") {
		t.Fatalf("explicit flag must win over the config: exit %d, stderr %q", code, errOut)
	}
}
