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
		"HTTP_LISTEN": "127.0.0.1:0", "ADMIN_TOKEN": "0123456789abcdef",
	}
	paths, err := filepath.Glob("../../configs/*processor*.yaml")
	if err != nil || len(paths) < 2 {
		t.Fatalf("processor configs: %v %v", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if _, err := loadConfig(p, func(k string) string { return env[k] }); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("a bad field is named", func(t *testing.T) {
		valid := "wechatpay:\n  mchid: \"1900000001\"\n  merchant-serial-no: S\n  private-key-file: k.pem\n" +
			"  wechatpay-public-key-file: p.pem\n  apiv3-key: 0123456789abcdef0123456789abcdef\n"
		if _, err := app.ParseConfig(strings.NewReader(valid), func(string) string { return "" }); err != nil {
			t.Fatalf("the base config must be valid: %v", err)
		}
		for _, tc := range []struct{ yaml, field string }{
			{"pipeline:\n  poll:\n    page-limit: 500\n", "pipeline.poll.page-limit"},
			{"nats:\n  topology:\n    ack-wait: 30s\n    backoff: [1s, 2s]\n", "nats.topology.backoff"},
			{"nats:\n  topology:\n    max-deliver: 20\n", "nats.topology.max-deliver"},
			{"nats:\n  topology:\n    max-age: 24h\n", "nats.topology.max-age"},
			{"  sub-mchids: [\"19x\"]\n", "wechatpay.sub-mchids"}, // continues the wechatpay block
			{"pipeline:\n  intake:\n    sweep-every: 0s\n", "pipeline.intake.sweep-every"},
			{"  product: transfers\n", "wechatpay.product"}, // continues the wechatpay block
			{"pipeline:\n  bill-scenes:\n    \"1000\":\n      report-infos: []\n", "pipeline.bill-scenes"},
			{"pipeline:\n  rate-limit:\n    cancel: 0\n", "pipeline.rate-limit"},
			{"nats:\n  topology:\n    replicas: 3\n", "nats.topology.replicas = 3: 1 with the embedded server"},
			{"pipeline:\n  poll:\n    not-found-grace: -5s\n", "pipeline.poll.not-found-grace = -5s: must not be negative"},
			{"  timeout: -1s\n", "wechatpay.timeout = -1s: must not be negative"}, // continues the wechatpay block
			{"nats:\n  topology:\n    duplicate-window: -2m\n", "nats.topology.duplicate-window = -2m0s: must not be negative"},
			{"pipeline:\n  batching:\n    max-wait: -1s\n", "pipeline.batching.max-wait = -1s: must not be negative"},
			{"pipeline:\n  poll:\n    interval: 0s\n", "pipeline.poll.interval = 0s: must be positive"},
			{"pipeline:\n  submit:\n    parked-retry: 0s\n", "pipeline.submit.parked-retry = 0s: must be positive"},
			{"pipeline:\n  intake:\n    fetch-max-wait: 0s\n", "pipeline.intake.fetch-max-wait = 0s: must be positive"},
			{"pipeline:\n  poll:\n    interval: 1 minute\n", `pipeline.poll.interval: cannot use "1 minute" as a duration`},
			{"pipeline:\n  submit:\n    workers: eight\n", `pipeline.submit.workers: cannot use "eight" as an integer`},
		} {
			_, err := app.ParseConfig(strings.NewReader(valid+tc.yaml), func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("err = %v, want one naming %s", err, tc.field)
			}
		}
	})
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
