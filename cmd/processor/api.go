package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"

	"github.com/paystream/paystream/pkg/wechatpay"
)

const apiUsage = `usage: processor api [flags] METHOD PATH [--data JSON|@FILE|@-]

Sends one signed WeChat Pay APIv3 request, verifies the response signature and prints the
JSON body. PATH is the path plus ?query exactly as it must be signed, or a full URL. An
ambiguous answer (5xx, 429, SYSTEM_ERROR, an unknown code, a transport error) is sent again
with the same body, up to --retries more times, each logged on stderr: WeChat answers a repeat
of a request that carries its number with that request's result (docs/money-rules.md#ambiguous).
With --dry-run nothing is sent: the signing message and the Authorization header are printed
(--timestamp and --nonce fix them, to reproduce a signature).

exit status: 0 ok, 1 API or transport error, 2 usage or configuration error

flags:
`

// apiFlags are the settings of processor api.
type apiFlags struct {
	dryRun                 bool
	timestamp              int64
	nonce                  string
	data                   string
	mchID, serialNo        string
	privateKey             string
	publicKey, publicKeyID string
	baseURL, backupURL     string
	timeout                time.Duration
	retries                int
	config                 string
}

func (f *apiFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the signing message and Authorization header; send nothing")
	fs.Int64Var(&f.timestamp, "timestamp", 0, "Unix seconds to sign with (--dry-run only; default now)")
	fs.StringVar(&f.nonce, "nonce", "", "nonce to sign with (--dry-run only; default random)")
	fs.StringVar(&f.data, "data", "", "request body: JSON, @FILE, or @- for stdin (sent byte for byte)")
	fs.StringVar(&f.mchID, "mchid", "", "merchant id (required)")
	fs.StringVar(&f.serialNo, "serial-no", "", "merchant API certificate serial (required)")
	fs.StringVar(&f.privateKey, "private-key", "", "merchant private key PEM file, mode 0600 (required)")
	fs.StringVar(&f.publicKey, "wechatpay-public-key", "", "WeChat Pay public key PEM file (required to send)")
	fs.StringVar(&f.publicKeyID, "wechatpay-public-key-id", "", "WeChat Pay public key id, PUB_KEY_ID_… (required to send)")
	fs.StringVar(&f.baseURL, "base-url", wechatpay.DefaultBaseURL, "API base URL")
	fs.StringVar(&f.backupURL, "backup-base-url", "", "backup base URL tried after a connection error")
	fs.DurationVar(&f.timeout, "timeout", wechatpay.DefaultTimeout, "timeout of the request")
	fs.IntVar(&f.retries, "retries", 2, "send an ambiguous answer's request again, with the same body, up to this many times (0: once)")
	fs.StringVar(&f.config, "config", "", "processor config file: keys and ids come from its wechatpay section (flags given explicitly win)")
}

// fromConfig fills every setting not given explicitly on the command line from the wechatpay
// section of the processor config at f.config.
func (f *apiFlags) fromConfig(fs *flag.FlagSet, getenv func(string) string) error {
	cfg, err := app.LoadConfig(f.config, getenv)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	w := cfg.WeChatPay
	for _, v := range []struct {
		flag string
		dst  *string
		val  string
	}{
		{"mchid", &f.mchID, w.MchID},
		{"serial-no", &f.serialNo, w.MerchantSerialNo},
		{"private-key", &f.privateKey, w.PrivateKeyFile},
		{"wechatpay-public-key", &f.publicKey, w.PublicKeyFile},
		{"wechatpay-public-key-id", &f.publicKeyID, w.PublicKeyID},
		{"base-url", &f.baseURL, w.BaseURL},
		{"backup-base-url", &f.backupURL, w.BackupBaseURL},
	} {
		if !set[v.flag] {
			*v.dst = v.val
		}
	}
	if !set["timeout"] && w.Timeout > 0 {
		f.timeout = w.Timeout
	}
	return nil
}

// errUsage marks a command-line or configuration mistake (exit status 2).
var errUsage = errors.New("usage")

// cmdAPI implements processor api.
func cmdAPI(ctx context.Context, args []string, e cli.Env) int {
	var f apiFlags
	fs := flag.NewFlagSet("processor api", flag.ContinueOnError)
	cli.SetUsage(fs, apiUsage)
	f.register(fs)
	pos, ok, code := parseInterspersed(fs, args, e)
	if !ok {
		return code
	}
	var err error
	if f.config != "" {
		err = f.fromConfig(fs, e.Getenv)
	}
	if err == nil {
		err = runAPI(ctx, f, pos, e)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.Stderr, "processor api: %v\n", err)
		return 2
	default:
		fmt.Fprintf(e.Stderr, "processor api: %v (class %s)\n", err, wechatpay.Classify(err))
		return 1
	}
}

// parseInterspersed parses flags that may follow positional arguments, as in
// "processor api POST /v3/x --data @body.json", and returns the positional ones; ok and code
// are cli.Parse's.
func parseInterspersed(fs *flag.FlagSet, args []string, e cli.Env) (pos []string, ok bool, code int) {
	for {
		if ok, code := cli.Parse(fs, args, e); !ok {
			return nil, false, code
		}
		if fs.NArg() == 0 {
			return pos, true, 0
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func runAPI(ctx context.Context, f apiFlags, pos []string, e cli.Env) error {
	if len(pos) != 2 {
		return usageErr("want METHOD PATH, got %d arguments (see processor api -h)", len(pos))
	}
	method := strings.ToUpper(pos[0])
	base, uri, err := splitTarget(pos[1], f.baseURL)
	if err != nil {
		return err
	}
	body, err := readData(f.data, e.Stdin)
	if err != nil {
		return err
	}
	if f.mchID == "" || f.serialNo == "" || f.privateKey == "" {
		return usageErr("--mchid, --serial-no and --private-key are required")
	}
	if f.dryRun {
		return dryRun(f, method, uri, body, e.Stdout)
	}
	if f.timestamp != 0 || f.nonce != "" {
		return usageErr("--timestamp and --nonce only go with --dry-run")
	}
	cfg := wechatpay.Config{
		BaseURL: base, BackupBaseURL: f.backupURL, MchID: f.mchID, MerchantSerialNo: f.serialNo,
		WechatPayPublicKeyID: f.publicKeyID,
	}
	if err := cfg.LoadKeyFiles(f.privateKey, f.publicKey); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log := slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := wechatpay.NewClient(cfg, wechatpay.WithLogger(log), wechatpay.WithTimeout(f.timeout), wechatpay.WithRetries(f.retries))
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	var out json.RawMessage
	if err := c.Do(ctx, method, uri, body, &out); err != nil {
		return err
	}
	if len(out) == 0 {
		return nil
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") != nil {
		pretty.Reset()
		pretty.Write(out)
	}
	pretty.WriteByte('\n')
	_, err = e.Stdout.Write(pretty.Bytes())
	return err
}

// splitTarget accepts a path (/v3/…?…) or a full URL, and returns the base URL and the path
// plus query exactly as typed, which is what gets signed.
func splitTarget(target, base string) (string, string, error) {
	if strings.HasPrefix(target, "/") {
		return base, target, nil
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", "", usageErr("PATH %q: want /v3/… or https://host/v3/…", target)
	}
	prefix := u.Scheme + "://" + u.Host
	uri := strings.TrimPrefix(target, prefix)
	if !strings.HasPrefix(uri, "/") {
		return "", "", usageErr("PATH %q has no path", target)
	}
	return prefix, uri, nil
}

// readData returns the body given by --data: nil for none, the bytes of @FILE or @- (stdin),
// or the literal text.
func readData(data string, stdin io.Reader) ([]byte, error) {
	switch {
	case data == "":
		return nil, nil
	case data == "@-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read body from stdin: %w", err)
		}
		return b, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, usageErr("--data: %v", err)
		}
		return b, nil
	}
	return []byte(data), nil
}

func dryRun(f apiFlags, method, uri string, body []byte, w io.Writer) error {
	key, err := wechatpay.LoadPrivateKey(f.privateKey)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ts, nonce := f.timestamp, f.nonce
	if ts == 0 {
		ts = time.Now().Unix()
	}
	if nonce == "" {
		nonce = wechatpay.NewNonce()
	}
	s := wechatpay.Signer{MchID: f.mchID, SerialNo: f.serialNo, Key: key}
	a, err := s.Authorization(method, uri, ts, nonce, body)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "Signing message (Go-quoted):\n%q\nAuthorization: %s\n",
		wechatpay.RequestMessage(method, uri, ts, nonce, body), a)
	return err
}
