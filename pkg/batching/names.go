package batching

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// MaxNameLen is the most characters in batch_name and batch_remark (docs/wechatpay.md §4).
const MaxNameLen = 32

// DefaultNames renders e.g. "20250301 批量转账 共1000笔" (at most 20 characters) and the
// out_batch_no itself, e.g. "BP10000000000000000042" (at most 32): both fit MaxNameLen for every
// out_batch_no and count the batcher produces, so neither is ever cut. The scene is not in the
// name: it is a field of the batch already, and a transfer_scene_id may be 36 characters.
var DefaultNames = Names{
	NameTemplate:   "{{.Date}} 批量转账 共{{.Count}}笔",
	RemarkTemplate: "{{.OutBatchNo}}",
}

// Sentinel errors of Names.Validate and Names.Render.
var (
	// ErrTemplate matches a template that does not parse or execute on NameData.
	ErrTemplate = errors.New("batching: bad batch name template")
	// ErrNameTooLong matches a template that renders more than MaxNameLen characters for the
	// widest batch (see Names.Validate).
	ErrNameTooLong = errors.New("batching: batch name template can exceed 32 characters")
)

// Names renders batch_name and batch_remark from text/template templates. The fields are
// those of NameData. A request's batch name/remark hint (part of its group key) wins over
// the template.
type Names struct {
	NameTemplate   string
	RemarkTemplate string
}

// NameData is what the templates see.
type NameData struct {
	Date       string // the batch's seal date in Asia/Shanghai, "20060102"
	Count      int    // total_num
	Total      int64  // total_amount in fen
	Yuan       string // total_amount in yuan, "1234.56"
	Scene      string // transfer_scene_id, or transfer_scene on the partner rail
	Rail       string
	MchID      string
	OutBatchNo string
}

// shanghai is China Standard Time (UTC+8, no DST), WeChat Pay's business day.
var shanghai = time.FixedZone("CST", 8*3600)

// Validate parses both templates and renders each with the widest NameData the batcher can
// produce (Widest): the longest out_batch_no (32 characters), the largest count
// (wechatpay.MaxDetailsPartner, 4 digits), the largest total, a 36-character scene and a
// 32-character mchid. A template that does not parse or execute fails with ErrTemplate; one
// that renders more than MaxNameLen characters there fails with ErrNameTooLong, because
// Render would cut it. Call it at start-up. Widest holds every field at its most characters,
// so a template whose length only grows with its fields' lengths never renders longer in
// Render; one that branches on values ({{if}}) is checked on that one sample only, and Render
// still cuts what it renders longer (see Render).
func (n Names) Validate() error {
	d := Widest()
	for _, f := range []struct{ field, tmpl string }{{"batch_name", n.NameTemplate}, {"batch_remark", n.RemarkTemplate}} {
		s, err := execute(f.field, f.tmpl, d)
		if err != nil {
			return err
		}
		if got := utf8.RuneCountInString(clean(s)); got > MaxNameLen {
			return fmt.Errorf("%w: %s template %q renders %d characters for the widest batch", ErrNameTooLong, f.field, f.tmpl, got)
		}
	}
	return nil
}

// Widest returns the NameData with every field at the most characters the batcher can
// produce: the 32-character out_batch_no of a 12-character instance id (OutBatchNo), a count
// of wechatpay.MaxDetailsPartner (the largest cap of any rail), a total of math.MaxInt64 fen
// (amounts have no upper bound when the processor's max amount is 0), a scene of
// payout.MaxSceneIDLen characters (longer than any transfer_scene), payout.RailPartner and a
// mchid of payout.MaxNoLen characters.
func Widest() NameData {
	const total = math.MaxInt64
	return NameData{
		Date: "20060102", Count: max(wechatpay.MaxDetailsPartner, wechatpay.MaxDetailsDirect, MaxDetailsBills),
		Total: total, Yuan: yuan(total), Scene: strings.Repeat("9", payout.MaxSceneIDLen),
		Rail: payout.RailPartner, MchID: strings.Repeat("9", payout.MaxNoLen),
		OutBatchNo: OutBatchNo(strings.Repeat("Z", MaxInstanceIDLen), math.MaxInt64),
	}
}

func yuan(fen int64) string { return fmt.Sprintf("%d.%02d", fen/100, fen%100) }

// Render returns batch_name and batch_remark (docs/wechatpay.md §4: 1–32 characters) for b sealed
// at now. The hint in b's group key wins; else the template is rendered. Control characters become
// spaces and an empty result falls back to the out_batch_no. Anything longer than MaxNameLen is cut
// to its first 32 characters: a hint is validated to fit by pkg/payout and a template by Validate,
// so the cut is a last resort for a template that branches on values. It fails only on a bad
// template (ErrTemplate) or a Group that is not a GroupKey.
func (n Names) Render(b Batch, now time.Time) (name, remark string, err error) {
	k, err := ParseKey(b.Group)
	if err != nil {
		return "", "", err
	}
	return n.RenderKey(k, b, now)
}

// RenderKey is Render for a caller that has already parsed b's group key into k (k must be
// ParseKey(b.Group); b.Group itself is not read), so a batch's key is parsed once. It fails
// only on a bad template.
func (n Names) RenderKey(k Key, b Batch, now time.Time) (name, remark string, err error) {
	total := b.TotalAmount()
	d := NameData{
		Date: now.In(shanghai).Format("20060102"), Count: b.TotalNum(), Total: total,
		Yuan: yuan(total), Scene: k.SceneID + k.TransferScene,
		Rail: k.Rail, MchID: k.MchID, OutBatchNo: b.OutBatchNo,
	}
	if name, err = render("batch_name", k.BatchName, n.NameTemplate, d); err != nil {
		return "", "", err
	}
	if remark, err = render("batch_remark", k.BatchRemark, n.RemarkTemplate, d); err != nil {
		return "", "", err
	}
	return name, remark, nil
}

func render(field, hint, tmpl string, d NameData) (string, error) {
	s := hint
	if s == "" {
		var err error
		if s, err = execute(field, tmpl, d); err != nil {
			return "", err
		}
	}
	s = strings.TrimSpace(TrimChars(clean(s), MaxNameLen))
	if s == "" {
		s = d.OutBatchNo
	}
	return s, nil
}

// execute renders tmpl on d as it is, neither cleaned nor cut.
func execute(field, tmpl string, d NameData) (string, error) {
	t, err := template.New(field).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrTemplate, field, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrTemplate, field, err)
	}
	return b.String(), nil
}

// clean replaces control characters with spaces and trims the ends.
func clean(s string) string { return strings.TrimSpace(strings.Map(printable, s)) }

func printable(r rune) rune {
	if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
		return ' '
	}
	return r
}

// TrimChars returns s cut to at most n characters (runes), never inside a character.
func TrimChars(s string, n int) string {
	if n <= 0 {
		return ""
	}
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
