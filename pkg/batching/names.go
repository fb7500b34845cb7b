package batching

import (
	"fmt"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the most characters in batch_name and batch_remark (docs/wechatpay.md §4).
const MaxNameLen = 32

// DefaultNames renders e.g. "20250301 批量转账 1001" and "BP10000000000000000042 共1000笔".
var DefaultNames = Names{
	NameTemplate:   "{{.Date}} 批量转账 {{.Scene}}",
	RemarkTemplate: "{{.OutBatchNo}} 共{{.Count}}笔",
}

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

// Validate parses both templates and renders them once with sample data; call it at start-up
// so that Render only fails on a bad group key.
func (n Names) Validate() error {
	k := Key{Rail: "direct", MchID: "1900000001", SceneID: "1001"}
	_, _, err := n.Render(Batch{OutBatchNo: OutBatchNo("X", 1), Group: k.String(), Items: []Item{{Seq: 1, Amount: 100}}}, time.Unix(0, 0))
	return err
}

// Render returns batch_name and batch_remark (docs/wechatpay.md §4: 1–32 characters) for b sealed
// at now. The hint in b's group key wins; else the template is rendered. Control characters become
// spaces, the result is trimmed to 32 characters, and an empty result falls back to the
// out_batch_no. It fails only on a bad template or a Group that is not a GroupKey.
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
		Yuan: fmt.Sprintf("%d.%02d", total/100, total%100), Scene: k.SceneID + k.TransferScene,
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
		t, err := template.New(field).Option("missingkey=error").Parse(tmpl)
		if err != nil {
			return "", fmt.Errorf("batching: %s template: %w", field, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, d); err != nil {
			return "", fmt.Errorf("batching: %s template: %w", field, err)
		}
		s = b.String()
	}
	s = strings.TrimSpace(TrimChars(strings.Map(printable, s), MaxNameLen))
	if s == "" {
		s = d.OutBatchNo
	}
	return s, nil
}

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
