package wechatpaytest

import (
	"crypto/rsa"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Identities of the TEST-ONLY credentials the sandbox uses by default. They match
// testdata/testvectors (vectors.json "parameters").
const (
	DefaultMchID          = "1900000001"
	DefaultMerchantSerial = "TESTMERCHANTSERIAL0001"
	DefaultPlatformKeyID  = "PUB_KEY_ID_0119000000012025011500000000000001"
	DefaultAPIv3Key       = "TestOnlyAPIv3Key0123456789abcdef"
	DefaultAppID          = "wxf636efh567hg4356"
)

// Defaults of the behaviour options (DefaultOptions).
const (
	// DefaultTimestampWindow is how far a request's Authorization timestamp may be from the sandbox
	// clock. WeChat does not publish its window (docs/transfer-bills.md §12); 5 minutes mirrors the
	// response rule of docs/wechatpay.md §2.
	DefaultTimestampWindow = 5 * time.Minute
	// DefaultAcceptDelay is how long a batch stays ACCEPTED (details INIT) at Speed 1.
	DefaultAcceptDelay = 2 * time.Second
	// DefaultProcessDelay is how long a detail stays PROCESSING at Speed 1.
	DefaultProcessDelay = time.Minute
	// DefaultMinAmount is the smallest transfer_amount accepted (docs/wechatpay.md §4: 30 fen).
	DefaultMinAmount wechatpay.Fen = 30
	// DefaultRateLimit is the per-endpoint limit of the batch APIs (docs/wechatpay.md §5, §6: 50
	// QPS).
	DefaultRateLimit = 50
	// DefaultBillRateLimit is the per-endpoint limit of transfer bills and abnormal-fund
	// instructions (docs/transfer-bills.md; docs/abnormal-funds.md: 100/s).
	DefaultBillRateLimit = 100
	// DefaultNotifyAttempts bounds the deliveries of one callback notification.
	DefaultNotifyAttempts = 5
	// DefaultNotifyBackoff is the wait before the second delivery at Speed 1; it doubles
	// after each failed attempt.
	DefaultNotifyBackoff = 15 * time.Second
	// DefaultBillConfirmTimeout is how long a bill waits in WAIT_USER_CONFIRM before it
	// expires to FAIL at Speed 1 (docs/transfer-bills.md: 24 h).
	DefaultBillConfirmTimeout = 24 * time.Hour
	// TestSpeed is the Speed NewServer uses unless an Option changes it: a batch is accepted
	// after 20 ms and its details finish 600 ms later.
	TestSpeed = 100
	// QueryWindow is how old a batch may be and still be queried (docs/wechatpay.md §10: 30 days).
	// Speed does not scale it.
	QueryWindow = 30 * 24 * time.Hour
)

// Products a merchant may hold (Options.Product). Since 2025-01-15 they are mutually
// exclusive (docs/transfer-bills.md §1): a merchant of one gets 403 NO_AUTH on the other's creates.
const (
	// ProductBoth serves both products: the sandbox's historical behaviour.
	ProductBoth = ""
	// ProductBatches is the old 商家转账到零钱 batch API only (docs/wechatpay.md §4, §6).
	ProductBatches = "batches"
	// ProductBills is the new 商家转账 transfer bills only (docs/transfer-bills.md).
	ProductBills = "bills"
)

// BillSceneRule is what a transfer_scene_id requires of a bill create (docs/transfer-bills.md):
// transfer_scene_report_infos carries exactly one row of each of ReportInfos (in any order)
// and no other, and user_recv_perception is empty or one of Perceptions (an empty list
// allows only an empty perception).
type BillSceneRule struct {
	ReportInfos []string `json:"report_infos"`
	Perceptions []string `json:"perceptions,omitempty"`
}

// DefaultBillScenes returns the scene table of docs/transfer-bills.md: 1000 现金营销 (活动名称, 奖励说明;
// 现金奖励 or 活动奖励) and 1005 佣金报酬 (岗位类型, 报酬说明; 劳务报酬 or 报酬). It is a new
// map on each call.
func DefaultBillScenes() map[string]BillSceneRule {
	return map[string]BillSceneRule{
		"1000": {ReportInfos: []string{"活动名称", "奖励说明"}, Perceptions: []string{"现金奖励", "活动奖励"}},
		"1005": {ReportInfos: []string{"岗位类型", "报酬说明"}, Perceptions: []string{"劳务报酬", "报酬"}},
	}
}

// Unlimited is the default merchant balance: no create is ever refused with NOT_ENOUGH.
const Unlimited wechatpay.Fen = math.MaxInt64

// Options configures a Server. Build them with DefaultOptions and change what you need:
// the zero value of a field means zero (a zero RateLimit is "no limit"), not "default".
// Speed divides every sandbox duration (AcceptDelay, ProcessDelay, AutoConfirm,
// WaitPayTimeout, NotFoundLag, NotifyBackoff, NotifyDelay, BillConfirmTimeout,
// BillAutoConfirm, BillCloseLag, ReceiptDelay), never Latency faults, TimestampWindow or QueryWindow.
type Options struct {
	// MchID is the merchant id every Authorization must carry.
	MchID string
	// MerchantSerial is the serial_no every Authorization must carry.
	MerchantSerial string
	// MerchantKey verifies request signatures (docs/wechatpay.md §1) and encrypts user_name in
	// detail query answers (docs/wechatpay.md §3).
	MerchantKey *rsa.PublicKey
	// PlatformKeyID is sent as Wechatpay-Serial on every response and notification and is the
	// only Wechatpay-Serial a request may name. A PUB_KEY_ID_… value is the public-key mode;
	// anything else stands for a platform certificate serial (docs/wechatpay.md §2).
	PlatformKeyID string
	// PlatformKey signs responses and notifications and decrypts user_name (docs/wechatpay.md §2,
	// §3).
	PlatformKey *rsa.PrivateKey
	// APIv3Key encrypts notification resources (docs/wechatpay.md §7); 32 ASCII bytes.
	APIv3Key string
	// AppID, when not empty, is the only appid accepted; another gets 401
	// APPID_MCHID_NOT_MATCH. Empty accepts any non-empty appid.
	AppID string
	// TimestampWindow bounds |now − Authorization timestamp|; beyond it, 401 SIGN_ERROR.
	TimestampWindow time.Duration

	// Speed divides the sandbox durations listed above; 1 is realistic. Must be > 0.
	Speed float64
	// AcceptDelay is how long a new batch stays ACCEPTED with its details INIT, and a new
	// abnormal-fund instruction RECEIPT_STATE_PENDING.
	AcceptDelay time.Duration
	// BillAcceptDelay is how long a new transfer bill stays ACCEPTED (its create answers
	// ACCEPTED, with package_info) before WAIT_USER_CONFIRM. WeChat usually answers
	// WAIT_USER_CONFIRM at once (docs/transfer-bills.md §3): 0.
	BillAcceptDelay time.Duration
	// ProcessDelay is how long a detail stays PROCESSING before SUCCESS or FAIL, and an
	// abnormal-fund instruction RECEIPT_STATE_PROGRESS before RECEIPT_STATE_COMPLETED.
	ProcessDelay time.Duration
	// NotFoundLag: queries of a batch younger than this answer 404 NOT_FOUND (docs/wechatpay.md
	// §8).
	NotFoundLag time.Duration
	// NoPasswordLimit: details with a larger amount go WAIT_PAY until confirmed (Confirm,
	// POST /sandbox/confirm) or AutoConfirm. 0 means no limit.
	NoPasswordLimit wechatpay.Fen
	// AutoConfirm confirms WAIT_PAY details this long after acceptance. 0 never does.
	AutoConfirm time.Duration
	// WaitPayTimeout fails unconfirmed WAIT_PAY details with MERCHANT_NOT_CONFIRM this long
	// after acceptance; a batch whose details all expired is CLOSED (OVERDUE_CLOSE).
	// 0 waits forever. AutoConfirm, when set, wins.
	WaitPayTimeout time.Duration
	// Balance is the merchant's starting balance. A create whose total exceeds the balance
	// not yet held by unsettled details gets 403 NOT_ENOUGH. Unlimited disables the check.
	Balance wechatpay.Fen
	// MinAmount is the smallest transfer_amount accepted (docs/wechatpay.md §4).
	MinAmount wechatpay.Fen
	// MaxDetailsDirect and MaxDetailsPartner cap transfer_detail_list (docs/wechatpay.md §4, §6).
	MaxDetailsDirect, MaxDetailsPartner int
	// RateLimit is the requests per second allowed on each batch endpoint (fixed 1-s
	// window); more get 429 FREQUENCY_LIMITED. 0 is no limit.
	RateLimit int
	// BillRateLimit is the same for transfer bills and abnormal-fund endpoints.
	BillRateLimit int
	// Product is what the merchant holds: ProductBoth (default), ProductBatches or
	// ProductBills. The other product's creates answer 403 NO_AUTH (docs/transfer-bills.md §1).
	Product string
	// BillScenes are the transfer_scene_id values a bill create may use and what each requires; a
	// scene not in the table, a report-info mismatch or a perception outside the rule answers 400
	// PARAM_ERROR (docs/transfer-bills.md). Nil means DefaultBillScenes(), the one field whose zero
	// value is not "none".
	BillScenes map[string]BillSceneRule
	// BillConfirmTimeout closes a bill the user has not confirmed as FAIL OVERDUE_CLOSE this long
	// (plus BillCloseLag) after its creation (docs/transfer-bills.md: 24 h). 0 never closes.
	BillConfirmTimeout time.Duration
	// BillCloseLag is how late the expiry close comes after BillConfirmTimeout
	// (docs/transfer-bills.md: "closing may lag"). 0 closes on time.
	BillCloseLag time.Duration
	// BillAutoConfirm is when the simulated user acts on a bill, counted from its creation:
	// by openid (see NoConfirmOpenIDPrefix), confirm, decline or never. 0: users act only
	// through ConfirmBill and DeclineBill.
	BillAutoConfirm time.Duration
	// FundFlowDelay is when a day's fund-flow bill is ready, counted from the end of that day in
	// China Standard Time (DefaultFundFlowDelay: 10:00 the next day); before, an application
	// answers 400 STATEMENT_CREATING. From -24h (each day's bill from its start) up; Speed does
	// not scale it.
	FundFlowDelay time.Duration
	// FundFlowReturns writes each failed batch detail into the fund-flow bills as a 支出 when its
	// batch was accepted and a 收入 (FundFlowTypeReturn) when it failed. Off: only payments.
	FundFlowReturns bool
	// ReceiptDelay is how long an electronic receipt is generated after its application before
	// it is FINISHED (receipts.go, docs/receipts.md).
	ReceiptDelay time.Duration
	// ReceiptWrongHash makes every FINISHED receipt query answer a hash_value that is not the
	// SHA256 of the file (Stats.Faults[FaultReceiptWrongHash]).
	ReceiptWrongHash bool
	// ReceiptWithoutName makes receipts also for payments sent without user_name, which WeChat
	// Pay refuses (docs/receipts.md §5): for demos and tests whose payouts carry no names.
	ReceiptWithoutName bool

	// NotifyAttempts bounds deliveries of one notification (non-2xx answers are retried).
	NotifyAttempts int
	// NotifyBackoff is the first wait between deliveries; it doubles each time.
	NotifyBackoff time.Duration
	// NotifyLoss is the probability (0..1) that a notification, batch or bill, is never
	// delivered at all, drawn from the Seed generator when it is queued (Stats.NotifyLost).
	// Queries still tell the truth: callbacks are hints.
	NotifyLoss float64
	// NotifyDelay is an extra wait, on the sandbox clock, before a notification's first
	// delivery (late callbacks). 0 delivers at the next tick.
	NotifyDelay time.Duration
	// HTTPClient delivers notifications. Nil uses a client with a 5 s timeout (docs/wechatpay.md
	// §7).
	HTTPClient *http.Client

	// Faults are probabilistic faults active from the start (see FailRate).
	Faults []FaultRule
	// Seed makes probabilistic faults reproducible.
	Seed uint64
	// Admin serves the unsigned /sandbox/ admin API (see Server.Handler).
	Admin bool
	// Now is the clock. Nil is time.Now.
	Now func() time.Time
	// Logger receives one line per request and per notification. Nil discards.
	Logger *slog.Logger
}

// DefaultOptions returns realistic settings (Speed 1) with the embedded TEST-ONLY keys and
// WeChat Pay's documented limits (docs/wechatpay.md §8).
func DefaultOptions() Options {
	return Options{
		MchID:              DefaultMchID,
		MerchantSerial:     DefaultMerchantSerial,
		MerchantKey:        MerchantPublicKey(),
		PlatformKeyID:      DefaultPlatformKeyID,
		PlatformKey:        PlatformPrivateKey(),
		APIv3Key:           DefaultAPIv3Key,
		TimestampWindow:    DefaultTimestampWindow,
		Speed:              1,
		AcceptDelay:        DefaultAcceptDelay,
		BillAcceptDelay:    DefaultAcceptDelay,
		ProcessDelay:       DefaultProcessDelay,
		Balance:            Unlimited,
		MinAmount:          DefaultMinAmount,
		MaxDetailsDirect:   wechatpay.MaxDetailsDirect,
		MaxDetailsPartner:  wechatpay.MaxDetailsPartner,
		RateLimit:          DefaultRateLimit,
		BillRateLimit:      DefaultBillRateLimit,
		BillConfirmTimeout: DefaultBillConfirmTimeout,
		FundFlowDelay:      DefaultFundFlowDelay,
		ReceiptDelay:       DefaultReceiptDelay,
		NotifyAttempts:     DefaultNotifyAttempts,
		NotifyBackoff:      DefaultNotifyBackoff,
	}
}

// ErrOptions is wrapped by every error New returns for bad Options.
var ErrOptions = errors.New("wechatpaytest: bad options")

func (o *Options) validate() error {
	bad := func(field string, v any) error { return fmt.Errorf("%w: %s = %v", ErrOptions, field, v) }
	switch {
	case o.MchID == "":
		return bad("MchID", `""`)
	case o.MerchantSerial == "":
		return bad("MerchantSerial", `""`)
	case o.MerchantKey == nil:
		return bad("MerchantKey", nil)
	case o.PlatformKey == nil:
		return bad("PlatformKey", nil)
	case o.PlatformKeyID == "":
		return bad("PlatformKeyID", `""`)
	case len(o.APIv3Key) != wechatpay.APIv3KeySize:
		return bad("len(APIv3Key)", len(o.APIv3Key))
	case !(o.Speed > 0) || math.IsInf(o.Speed, 0):
		return bad("Speed", o.Speed)
	case o.Balance < 0:
		return bad("Balance", o.Balance)
	case o.MinAmount < 1:
		return bad("MinAmount", o.MinAmount)
	case o.MaxDetailsDirect < 1:
		return bad("MaxDetailsDirect", o.MaxDetailsDirect)
	case o.MaxDetailsPartner < 1:
		return bad("MaxDetailsPartner", o.MaxDetailsPartner)
	case o.RateLimit < 0:
		return bad("RateLimit", o.RateLimit)
	case o.BillRateLimit < 0:
		return bad("BillRateLimit", o.BillRateLimit)
	case o.NotifyAttempts < 1:
		return bad("NotifyAttempts", o.NotifyAttempts)
	case !(o.NotifyLoss >= 0 && o.NotifyLoss <= 1):
		return bad("NotifyLoss", o.NotifyLoss)
	case o.Product != ProductBoth && o.Product != ProductBatches && o.Product != ProductBills:
		return bad("Product", o.Product)
	case o.FundFlowDelay < -24*time.Hour:
		return bad("FundFlowDelay", o.FundFlowDelay)
	}
	if err := ValidateBillScenes(o.BillScenes); err != nil {
		return fmt.Errorf("%w: BillScenes: %w", ErrOptions, err)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"TimestampWindow", o.TimestampWindow}, {"AcceptDelay", o.AcceptDelay}, {"BillAcceptDelay", o.BillAcceptDelay},
		{"ProcessDelay", o.ProcessDelay}, {"NotFoundLag", o.NotFoundLag},
		{"AutoConfirm", o.AutoConfirm}, {"WaitPayTimeout", o.WaitPayTimeout},
		{"NotifyBackoff", o.NotifyBackoff}, {"BillConfirmTimeout", o.BillConfirmTimeout},
		{"BillAutoConfirm", o.BillAutoConfirm}, {"BillCloseLag", o.BillCloseLag},
		{"NotifyDelay", o.NotifyDelay}, {"ReceiptDelay", o.ReceiptDelay},
	} {
		if d.d < 0 {
			return bad(d.name, d.d)
		}
	}
	for _, r := range o.Faults {
		if !(r.Rate >= 0 && r.Rate <= 1) {
			return bad("Faults.Rate", r.Rate)
		}
	}
	return nil
}

// ValidateBillScenes checks a scene table as New does: nil (the defaults) or not empty;
// scene ids of 1 to 36 characters, each with 1 or more distinct info types of 1 to 15
// characters and perceptions of 1 to 32.
func ValidateBillScenes(scenes map[string]BillSceneRule) error {
	if scenes != nil && len(scenes) == 0 {
		return errors.New("empty: no bill could be created (nil means the defaults)")
	}
	for id, r := range scenes {
		if !textOK(id, 1, 36) {
			return fmt.Errorf("scene %q: want 1 to 36 characters", id)
		}
		if len(r.ReportInfos) == 0 {
			return fmt.Errorf("scene %s: no report info types", id)
		}
		seen := map[string]bool{}
		for _, t := range r.ReportInfos {
			if !textOK(t, 1, 15) || seen[t] {
				return fmt.Errorf("scene %s: info type %q is empty, longer than 15 characters or repeated", id, t)
			}
			seen[t] = true
		}
		for _, p := range r.Perceptions {
			if !textOK(p, 1, 32) {
				return fmt.Errorf("scene %s: perception %q: want 1 to 32 characters", id, p)
			}
		}
	}
	return nil
}

// scaled divides d by Speed.
func (o *Options) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) / o.Speed)
}

// Option changes the Options of NewServer. Any func(*Options) is an Option.
type Option func(*Options)

// WithSpeed sets Options.Speed.
func WithSpeed(speed float64) Option { return func(o *Options) { o.Speed = speed } }

// WithClock sets Options.Now.
func WithClock(now func() time.Time) Option { return func(o *Options) { o.Now = now } }

// WithBalance sets Options.Balance.
func WithBalance(fen wechatpay.Fen) Option { return func(o *Options) { o.Balance = fen } }

// WithRateLimit sets Options.RateLimit and Options.BillRateLimit; 0 turns limiting off.
func WithRateLimit(qps int) Option {
	return func(o *Options) { o.RateLimit, o.BillRateLimit = qps, qps }
}

// WithNotFoundLag sets Options.NotFoundLag.
func WithNotFoundLag(d time.Duration) Option { return func(o *Options) { o.NotFoundLag = d } }

// WithNoPasswordLimit sets Options.NoPasswordLimit.
func WithNoPasswordLimit(fen wechatpay.Fen) Option {
	return func(o *Options) { o.NoPasswordLimit = fen }
}

// WithProduct sets Options.Product.
func WithProduct(product string) Option { return func(o *Options) { o.Product = product } }

// WithBillAutoConfirm sets Options.BillAutoConfirm.
func WithBillAutoConfirm(d time.Duration) Option { return func(o *Options) { o.BillAutoConfirm = d } }

// WithNotify sets Options.NotifyLoss and Options.NotifyDelay.
func WithNotify(loss float64, delay time.Duration) Option {
	return func(o *Options) { o.NotifyLoss, o.NotifyDelay = loss, delay }
}

// WithLogger sets Options.Logger.
func WithLogger(l *slog.Logger) Option { return func(o *Options) { o.Logger = l } }

//go:embed keys/*.pem
var keyFiles embed.FS

func mustKey[K any](name string, parse func([]byte) (K, error)) func() K {
	return sync.OnceValue(func() K {
		b, err := keyFiles.ReadFile("keys/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		k, err := parse(b)
		if err != nil {
			panic(fmt.Sprintf("embedded %s: %v", name, err))
		}
		return k
	})
}

var (
	// MerchantPrivateKey returns the embedded TEST-ONLY merchant private key (it signs
	// requests; serial DefaultMerchantSerial).
	MerchantPrivateKey = mustKey("merchant_TEST_ONLY_private_key.pem", wechatpay.ParsePrivateKey)
	// MerchantPublicKey returns the public half of MerchantPrivateKey.
	MerchantPublicKey = mustKey("merchant_TEST_ONLY_public_key.pem", wechatpay.ParsePublicKey)
	// PlatformPrivateKey returns the embedded TEST-ONLY key that stands in for WeChat Pay's.
	PlatformPrivateKey = mustKey("wechatpay_platform_TEST_ONLY_private_key.pem", wechatpay.ParsePrivateKey)
	// PlatformPublicKey returns the "WeChat Pay public key" (id DefaultPlatformKeyID).
	PlatformPublicKey = mustKey("wechatpay_platform_TEST_ONLY_public_key.pem", wechatpay.ParsePublicKey)
)
