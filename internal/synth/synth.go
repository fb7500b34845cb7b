// Package synth generates realistic synthetic payout requests for demos, tests, soaks and
// benchmarks: several groups (appids and scenes), amounts mostly 0.30–200 yuan, some of 2000
// yuan or more with a Chinese user_name, some openids "fail-<FAIL_REASON>-<id>" that the
// sandbox fails with that reason, and a share of invalid lines of many kinds. Output is
// deterministic for a seed, except the ciphertexts of sealed names (Options.NameKey), which
// are as random as NameKey.Rand.
//
// Options.Product picks the WeChat Pay product the requests are for. ProductBatches (the
// default) makes requests for the batch API. ProductBills makes transfer bills requests:
// scene 1000 (现金营销) or 1005 (佣金报酬) with exactly the report rows payout.DefaultBillScenes
// requires and sometimes a user_recv_perception, and simulated payees the sandbox plays by
// openid prefix: "noconfirm-" never confirms (WeChat closes the bill as FAIL OVERDUE_CLOSE),
// "decline-" declines (FAIL), "fail-<REASON>-" fails with REASON, any other confirms. The
// batch product's lines are the same for a seed as before ProductBills existed.
package synth

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/payout"
)

// Options drives the generator.
type Options struct {
	Count       int
	Seed        uint64
	InvalidRate float64 // share of invalid lines
	FailRate    float64 // share of openids the sandbox fails
	NamedRate   float64 // share of ≥2000-yuan payouts carrying user_name
	MchID       string
	AppIDs      []string
	Start       time.Time // created_at of the first request
	// NameKey, when set, seals every name (payout.NameKey.Seal): lines carry
	// user_name_cipher and wechatpay_serial instead of user_name, as a producer publishes
	// them. Nil (the default) leaves plaintext names, which the producer seals when it
	// publishes. The choice of lines, keys and amounts is the same either way.
	NameKey *payout.NameKey
	// Product is ProductBatches ("" too) or ProductBills.
	Product string
	// Shares of the bills product's payees who never confirm and who decline (openids
	// "noconfirm-<i>" and "decline-<i>"); ignored on the batch product.
	NoConfirmRate, DeclineRate float64
}

// Products: which WeChat Pay product the requests are for (the processor's
// wechatpay.product).
const (
	ProductBatches = "batches"
	ProductBills   = "bills"
)

// Openid prefixes of the payees the sandbox simulates (pkg/wechatpay/wechatpaytest).
const (
	FailPrefix      = "fail-"      // "fail-<REASON>-…": the transfer fails with REASON
	NoConfirmPrefix = "noconfirm-" // bills: never confirms; closed as FAIL OVERDUE_CLOSE
	DeclinePrefix   = "decline-"   // bills: declines; FAIL
)

// DefaultOptions returns the defaults of "producer gen".
func DefaultOptions() Options {
	return Options{
		Count: 100, Seed: 1, InvalidRate: 0.01, FailRate: 0.02, NamedRate: 0.02, MchID: "1900000001",
		AppIDs:        []string{"wxa0000000000000001", "wxa0000000000000002", "wxa0000000000000003"},
		Start:         time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
		Product:       ProductBatches,
		NoConfirmRate: 0.01, DeclineRate: 0.01,
	}
}

// bills reports whether o makes transfer bills requests.
func (o Options) bills() bool { return o.Product == ProductBills }

// Vocabulary of the generator.
var (
	scenes      = []string{"1001", "1001", "1001", "1001", "1005"} // weighted: most payouts are 现金营销
	remarks     = []string{"活动奖励", "现金红包", "邀请好友奖励", "佣金结算", "问卷调查奖励", "签到奖励", "推广佣金"}
	surnames    = []rune("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗欧阳")
	givenChars  = []rune("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英")
	failReasons = []string{"ACCOUNT_FROZEN", "REAL_NAME_CHECK_FAIL", "NAME_NOT_CORRECT", "OPENID_INVALID",
		"ACCOUNT_NOT_EXIST", "TRANSFER_QUOTA_EXCEED", "DAY_RECEIVED_QUOTA_EXCEED", "TRANSFER_RISK"}
	// billScenes maps the batch product's scene draw to a transfer bills scene.
	billScenes        = map[string]string{"1001": "1000", "1005": "1005"}
	defaultBillScenes = payout.DefaultBillScenes()
	// reportContents are realistic info_content values (≤ 32 characters) per info_type of
	// payout.DefaultBillScenes.
	reportContents = map[string][]string{
		"活动名称": {"新用户注册有礼", "春节红包雨", "邀请好友得现金", "每日签到领奖励", "问卷调查有奖", "618购物返现活动"},
		"奖励说明": {"注册完成奖励现金", "邀请3位好友奖励", "连续签到7天奖励", "完成问卷奖励现金", "订单满减返现"},
		"岗位类型": {"外卖骑手", "兼职推广员", "家政保洁", "代驾司机", "问卷访员", "社区团购团长"},
		"报酬说明": {"3月第1周配送报酬", "推广佣金结算", "服务订单报酬", "兼职工时报酬", "团购订单佣金"},
	}
)

const openIDChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"

// Record is one generated line: the request it was made from, and whether the line is that
// request (Valid) or a spoiled, invalid version of it. Req keeps the plaintext name, for
// checking what the payee is paid under; with Options.NameKey the line carries it sealed.
type Record struct {
	Req   payout.Request
	Line  []byte
	Valid bool
}

// Fails reports whether the sandbox fails this payout (its openid is "fail-<REASON>-…").
func (r Record) Fails() bool { return strings.HasPrefix(r.Req.OpenID, FailPrefix) }

// NeverConfirms reports whether the payee of this bill never confirms (openid "noconfirm-…").
func (r Record) NeverConfirms() bool { return strings.HasPrefix(r.Req.OpenID, NoConfirmPrefix) }

// Declines reports whether the payee of this bill declines (openid "decline-…").
func (r Record) Declines() bool { return strings.HasPrefix(r.Req.OpenID, DeclinePrefix) }

// Each calls fn with o.Count records, deterministic for o.Seed (see Options.NameKey). It
// returns the first error of fn or of sealing a name, or an error for an unknown
// o.Product.
func Each(ctx context.Context, o Options, fn func(Record) error) error {
	if o.Product != "" && o.Product != ProductBatches && o.Product != ProductBills {
		return fmt.Errorf("synth: unknown product %q (want %s or %s)", o.Product, ProductBatches, ProductBills)
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	for i := range o.Count {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		r := synth(rng, o, i)
		sent := r
		if o.NameKey != nil {
			if err := o.NameKey.Seal(&sent); err != nil {
				return err
			}
		}
		line, err := json.Marshal(sent)
		if err != nil {
			return err
		}
		rec := Record{Req: r, Line: line, Valid: true}
		if rng.Float64() < o.InvalidRate {
			rec.Line, rec.Valid = spoil(rng, sent, o.bills()), false
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// Generate writes o.Count records to w as JSON lines.
func Generate(ctx context.Context, o Options, w io.Writer) error {
	bw := bufio.NewWriter(w)
	err := Each(ctx, o, func(r Record) error {
		bw.Write(r.Line)
		return bw.WriteByte('\n')
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// synth returns the i-th valid request.
func synth(rng *rand.Rand, o Options, i int) payout.Request {
	r := payout.Request{
		Schema:      payout.SchemaV1,
		OutDetailNo: fmt.Sprintf("S%dN%d", o.Seed, i),
		MchID:       o.MchID,
		AppID:       o.AppIDs[skewed(rng, len(o.AppIDs))],
		SceneID:     scenes[rng.IntN(len(scenes))],
		Remark:      remarks[rng.IntN(len(remarks))],
		Source:      "gen",
		CreatedAt:   o.Start.Add(time.Duration(i) * 100 * time.Millisecond),
	}
	// Log-uniform over 30..20000 fen: many small rewards, a tail of larger ones.
	r.Amount = int64(30 * math.Exp(rng.Float64()*math.Log(20000.0/30)))
	if rng.Float64() < o.NamedRate {
		r.Amount = payout.NameRequiredFrom + rng.Int64N(600_000)
		r.UserName = chineseName(rng)
	}
	b := make([]byte, 28)
	b[0] = 'o'
	for j := 1; j < len(b); j++ {
		b[j] = openIDChars[rng.IntN(len(openIDChars))]
	}
	r.OpenID = string(b)
	if rng.Float64() < o.FailRate {
		r.OpenID = fmt.Sprintf("fail-%s-%d", failReasons[rng.IntN(len(failReasons))], i)
	}
	if o.bills() {
		billify(rng, o, i, &r)
	}
	return r
}

// billify turns a batch product request into a transfer bills one. It draws from rng only
// after everything the batch product draws, so batch product lines do not change.
func billify(rng *rand.Rand, o Options, i int, r *payout.Request) {
	r.SceneID = billScenes[r.SceneID]
	scene := defaultBillScenes[r.SceneID]
	for _, typ := range scene.ReportInfos {
		c := reportContents[typ]
		r.SceneReportInfos = append(r.SceneReportInfos, payout.SceneReportInfo{InfoType: typ, InfoContent: c[rng.IntN(len(c))]})
	}
	if rng.IntN(2) == 0 {
		r.UserRecvPerception = scene.Perceptions[rng.IntN(len(scene.Perceptions))]
	}
	if strings.HasPrefix(r.OpenID, FailPrefix) {
		return
	}
	switch x := rng.Float64(); {
	case x < o.NoConfirmRate:
		r.OpenID = fmt.Sprintf("%s%d", NoConfirmPrefix, i)
	case x < o.NoConfirmRate+o.DeclineRate:
		r.OpenID = fmt.Sprintf("%s%d", DeclinePrefix, i)
	}
}

// skewed returns an index in [0,n) where each index is half as likely as the one before, so
// that the first group is big enough to fill whole batches.
func skewed(rng *rand.Rand, n int) int {
	x := rng.Float64() * float64(int(1)<<n-1)
	for i := range n {
		if x < float64(int(1)<<(n-1-i)) {
			return i
		}
		x -= float64(int(1) << (n - 1 - i))
	}
	return n - 1
}

func chineseName(rng *rand.Rand) string {
	n := []rune{surnames[rng.IntN(len(surnames))]}
	for range 1 + rng.IntN(2) {
		n = append(n, givenChars[rng.IntN(len(givenChars))])
	}
	return string(n)
}

// spoil returns r as an invalid line of a random kind; a sealed name stays sealed. Bills
// requests have more kinds, about their report rows and perception.
func spoil(rng *rand.Rand, r payout.Request, bills bool) []byte {
	enc := func(r payout.Request) string { b, _ := json.Marshal(r); return string(b) }
	amount := fmt.Sprintf(`"amount":%d`, r.Amount)
	noName := func(r payout.Request) payout.Request {
		r.UserName, r.UserNameCipher, r.WechatpaySerial = "", "", ""
		return r
	}
	kinds := []func() string{
		func() string { r.OutDetailNo = "bad-no-" + r.OutDetailNo; return enc(r) },                  // charset
		func() string { return strings.Replace(enc(r), amount, amount+".5", 1) },                    // float amount
		func() string { return strings.Replace(enc(r), amount, amount+`,"amout":1`, 1) },            // unknown field
		func() string { r.OpenID = ""; return enc(r) },                                              // missing openid
		func() string { r.Remark = strings.Repeat("超长备注", 9); return enc(r) },                       // remark > 32 characters
		func() string { r.Amount = 0; return enc(r) },                                               // zero amount
		func() string { r.Amount = payout.NameRequiredFrom + 1; return enc(noName(r)) },             // name missing
		func() string { s := enc(r); return s[:len(s)/2] },                                          // truncated JSON
		func() string { return strings.Replace(enc(r), amount, amount+`,"amount":1`, 1) },           // duplicate key
		func() string { r.AppID, r.SubMchID = "", "1900000002"; return enc(r) },                     // partner without authorization_type
		func() string { r.Remark = "奖励\u0007"; return enc(r) },                                      // control character
		func() string { return strings.Replace(enc(r), amount, `"amount":9223372036854775808`, 1) }, // out of int64
	}
	if bills {
		kinds = append(kinds,
			func() string { r.SceneReportInfos = r.SceneReportInfos[:1]; return enc(r) }, // a report row missing
			func() string { r.SceneReportInfos = nil; return enc(r) },                    // no report rows
			func() string { r.UserRecvPerception = "红包"; return enc(r) },                 // perception not of the scene
			func() string { // content > 32 characters
				r.SceneReportInfos = slices.Clone(r.SceneReportInfos) // r shares the rows with the record
				r.SceneReportInfos[0].InfoContent = strings.Repeat("很长", 17)
				return enc(r)
			},
			func() string { r.SceneID = "1001"; return enc(r) },                                               // not a bill scene
			func() string { return strings.Replace(enc(r), `"info_type"`, `"info_kind":"x","info_type"`, 1) }, // unknown field in a row
		)
	}
	return []byte(kinds[rng.IntN(len(kinds))]())
}
