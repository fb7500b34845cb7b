package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// mustOpenLedger opens t.TempDir()/ledger.db; t.Cleanup closes it.
func mustOpenLedger(t testing.TB, opts ...Option) *DB {
	t.Helper()
	return mustOpenPath(t, filepath.Join(t.TempDir(), "ledger.db"), opts...)
}

func mustOpenPath(t testing.TB, path string, opts ...Option) *DB {
	t.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	db, err := Open(context.Background(), path, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newPayout returns a valid direct-rail request; its content hash covers key and amount.
func newPayout(key string, amount int64) Payout {
	h := sha256.Sum256([]byte(key + "/" + strconv.FormatInt(amount, 10)))
	return Payout{OutDetailNo: key, MchID: "1900000109", AppID: "wxapp", OpenID: "o-" + key, Remark: "prize",
		Rail: railDirect, GroupKey: "1900000109/direct", Amount: amount, ContentHash: h[:], StreamSeq: 7}
}

// mustInsert inserts ps and fails unless every one was Inserted; it returns their seqs.
func mustInsert(t testing.TB, db *DB, ps ...Payout) []int64 {
	t.Helper()
	res, err := db.InsertPayouts(context.Background(), ps)
	if err != nil {
		t.Fatalf("InsertPayouts: %v", err)
	}
	seqs := make([]int64, len(res))
	for i, r := range res {
		if r.Status != Inserted {
			t.Fatalf("InsertPayouts[%d] = %v, want inserted", i, r.Status)
		}
		seqs[i] = r.Seq
	}
	return seqs
}

// bodyFor builds a create-request body (docs/wechatpay.md §4) for ps as a pipeline would.
func bodyFor(no string, ps []Payout) []byte {
	type detail struct {
		OpenID      string `json:"openid"`
		OutDetailNo string `json:"out_detail_no"`
		Amount      int64  `json:"transfer_amount"`
		Remark      string `json:"transfer_remark"`
	}
	var total int64
	ds := make([]detail, len(ps))
	for i, p := range ps {
		ds[i] = detail{p.OpenID, p.OutDetailNo, p.Amount, p.Remark}
		total += p.Amount
	}
	b, _ := json.Marshal(struct {
		AppID       string   `json:"appid"`
		BatchName   string   `json:"batch_name"`
		BatchRemark string   `json:"batch_remark"`
		OutBatchNo  string   `json:"out_batch_no"`
		TotalAmount int64    `json:"total_amount"`
		TotalNum    int      `json:"total_num"`
		Details     []detail `json:"transfer_detail_list"`
	}{"wxapp", "prizes", "prizes", no, total, len(ps), ds})
	return b
}

// batchFor returns a sealable batch of ps (which must carry their seqs).
func batchFor(no string, ps []Payout) Batch {
	b := Batch{OutBatchNo: no, Rail: ps[0].Rail, GroupKey: ps[0].GroupKey, MchID: ps[0].MchID, TotalNum: len(ps),
		Body: bodyFor(no, ps)}
	for _, p := range ps {
		b.Members = append(b.Members, p.Seq)
		b.TotalAmount += p.Amount
	}
	return b
}

// mustSeal inserts n payouts keyed prefix0.., claims them and seals them as batch no.
func mustSeal(t testing.TB, db *DB, no, prefix string, n int) []Payout {
	t.Helper()
	ctx := context.Background()
	ps := make([]Payout, n)
	for i := range ps {
		ps[i] = newPayout(fmt.Sprintf("%s%d", prefix, i), int64(100+i))
	}
	for i, s := range mustInsert(t, db, ps...) {
		ps[i].Seq = s
	}
	seqs := make([]int64, n)
	for i := range ps {
		seqs[i] = ps[i].Seq
	}
	if err := db.MarkClaimed(ctx, seqs); err != nil {
		t.Fatalf("MarkClaimed: %v", err)
	}
	if err := db.SealBatch(ctx, batchFor(no, ps)); err != nil {
		t.Fatalf("SealBatch: %v", err)
	}
	return ps
}

// mustState fails unless the payout with key is in state want.
func mustState(t testing.TB, db *DB, key, want string) {
	t.Helper()
	p, err := db.Payout(context.Background(), key)
	if err != nil {
		t.Fatalf("Payout(%s): %v", key, err)
	}
	if p.State != want {
		t.Fatalf("payout %s state = %s, want %s", key, p.State, want)
	}
}

// mustViolations fails unless r's violations of check, as "row: detail" lines in report
// order, are want.
func mustViolations(t testing.TB, r *Report, check string, want ...string) {
	t.Helper()
	var got []string
	for _, v := range r.Violations {
		if v.Check == check {
			got = append(got, v.Row+": "+v.Detail)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s violations:\n%s\nwant:\n%s", check, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// mustPublishAll marks every pending outcome and notice event of db published, as a running
// processor's outbox would.
func mustPublishAll(t testing.TB, db *DB) {
	t.Helper()
	ctx := context.Background()
	outs, err := db.PendingOutcomes(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := db.PendingNotices(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, o := range outs {
		ids = append(ids, o.ID)
	}
	if err := db.MarkPublished(ctx, ids); err != nil {
		t.Fatal(err)
	}
	ids = ids[:0]
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	if err := db.MarkNoticesPublished(ctx, ids); err != nil {
		t.Fatal(err)
	}
}

// mustAuditFinds fails unless Audit of paths finds exactly want: violations per check (checks
// not in want must find none). It returns the report.
func mustAuditFinds(t testing.TB, now time.Time, want map[string]int, paths ...string) *Report {
	t.Helper()
	r, err := Audit(context.Background(), paths, now)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	got := map[string]int{}
	for _, c := range r.Checks {
		if c.Violations > 0 {
			got[c.Name] = c.Violations
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Audit found %v, want %v: %+v", got, want, r.Violations)
	}
	return r
}

// mustAuditClean fails unless Audit of paths finds nothing.
func mustAuditClean(t testing.TB, now time.Time, paths ...string) {
	t.Helper()
	r, err := Audit(context.Background(), paths, now)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	if !r.OK() {
		t.Fatalf("Audit found %d violations: %+v", len(r.Violations), r.Violations)
	}
}
