package ledger

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// randomKey is a 24-character [0-9A-Za-z] key, like an upstream's random out_detail_no.
func randomKey() string { return rand.Text()[:24] }

func randomGroup(n int) []Payout {
	ps := make([]Payout, n)
	for i := range ps {
		ps[i] = newPayout(randomKey(), int64(100+i))
	}
	return ps
}

// benchInsert inserts b.N groups of size n and reports rows/s.
func benchInsert(b *testing.B, db *DB, n int) {
	ctx := context.Background()
	groups := make([][]Payout, b.N)
	for i := range groups {
		groups[i] = randomGroup(n)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.InsertPayouts(ctx, groups[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkInsertPayouts: one transaction per group, synchronous=FULL, random keys.
func BenchmarkInsertPayouts(b *testing.B) {
	for _, n := range []int{100, 1000, 3000} {
		b.Run(fmt.Sprintf("group=%d", n), func(b *testing.B) {
			benchInsert(b, mustOpenLedger(b), n)
		})
	}
}

// BenchmarkInsertPayouts_Prefilled compares 1000-row groups into an empty ledger with a
// ledger already holding PAYSTREAM_BENCH_PREFILL (default 1,000,000) random-key payouts.
// The target (README "Performance"): prefilled rows/s ≥ 0.7 × empty rows/s, so random upstream
// keys do not collapse intake as a ledger grows.
func BenchmarkInsertPayouts_Prefilled(b *testing.B) {
	prefill := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("PAYSTREAM_BENCH_PREFILL")); err == nil {
		prefill = v
	}
	b.Run("empty", func(b *testing.B) { benchInsert(b, mustOpenLedger(b), 1000) })
	b.Run(fmt.Sprintf("prefilled=%d", prefill), func(b *testing.B) {
		db := mustOpenLedger(b)
		for done := 0; done < prefill; done += 3000 {
			if _, err := db.InsertPayouts(context.Background(), randomGroup(min(3000, prefill-done))); err != nil {
				b.Fatal(err)
			}
		}
		benchInsert(b, db, 1000)
	})
}

// BenchmarkApplyDetailPage applies 100-row pages (docs/wechatpay.md §8 limit) that finish their
// details.
func BenchmarkApplyDetailPage(b *testing.B) {
	ctx := context.Background()
	db := mustOpenLedger(b)
	type page struct {
		no   string
		off  int
		rows []DetailRow
	}
	pages := make([]page, 0, b.N)
	for len(pages) < b.N {
		no := fmt.Sprintf("B%d", len(pages)/10)
		ps := mustSeal(b, db, no, "p"+no+"x", 1000)
		for off := 0; off < 1000 && len(pages) < b.N; off += 100 {
			rows := make([]DetailRow, 100)
			for i := range rows {
				rows[i] = DetailRow{OutDetailNo: ps[off+i].OutDetailNo, DetailID: "d" + strconv.Itoa(off+i), Status: PayoutSuccess}
			}
			pages = append(pages, page{no, off, rows})
		}
	}
	b.ResetTimer()
	for _, p := range pages {
		if n, err := db.ApplyDetailPage(ctx, p.no, SourceQuery, p.off, p.rows); err != nil || n != 100 {
			b.Fatalf("page = %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkClaimAndSeal seals 1000-member batches as the pipeline does: members still
// RECEIVED (inserted untimed), each with a user_name ciphertext of an RSA-2048 key's size.
func BenchmarkClaimAndSeal(b *testing.B) {
	ctx := context.Background()
	db := mustOpenLedger(b)
	cipher := strings.Repeat("c", 344) // base64 of 256 bytes
	batches := make([]Batch, b.N)
	for i := range batches {
		ps := make([]Payout, 1000)
		for j := range ps {
			ps[j] = newPayout(fmt.Sprintf("s%dx%d", i, j), 100)
			ps[j].UserNameCipher = cipher
		}
		seqs := mustInsert(b, db, ps...)
		for j := range ps {
			ps[j].Seq = seqs[j]
		}
		batches[i] = batchFor(fmt.Sprintf("S%d", i), ps)
	}
	b.ResetTimer()
	for _, bt := range batches {
		if err := db.ClaimAndSeal(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "members/s")
}

// BenchmarkCommitIntake commits 1000-row groups as intake does with CommitIntake: every row
// owned by this instance and sealed, in the same transaction, into one direct batch of 1000.
// The payload is BenchmarkClaimAndSeal's (a user_name ciphertext of an RSA-2048 key's size),
// with random keys as in BenchmarkInsertPayouts. On the same payload, claimed=1000 commits the
// rows CLAIMED (no batch), insert=1000 times InsertPayouts alone, and old=insert+seal the path
// CommitIntake replaces: InsertPayouts, then ClaimAndSeal.
func BenchmarkCommitIntake(b *testing.B) {
	ctx := context.Background()
	cipher := strings.Repeat("c", 344) // base64 of 256 bytes
	// groups returns n groups of 1000 rows with seqs from next, each with its batch.
	groups := func(n int, next int64) ([][]Payout, []Batch) {
		rows, batches := make([][]Payout, n), make([]Batch, n)
		for i := range rows {
			rows[i] = make([]Payout, MaxDetailsDirect)
			for j := range rows[i] {
				rows[i][j] = newPayout(randomKey(), 100)
				rows[i][j].UserNameCipher = cipher
				rows[i][j].Seq = next + int64(i*MaxDetailsDirect+j)
			}
			batches[i] = batchFor(fmt.Sprintf("S%d", i), rows[i])
		}
		return rows, batches
	}
	run := func(name string, commit func(db *DB, rows []Payout, bt Batch) error) {
		b.Run(name, func(b *testing.B) {
			db := mustOpenLedger(b)
			rows, batches := groups(b.N, db.NextSeq())
			b.ResetTimer()
			for i := range rows {
				if err := commit(db, rows[i], batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*MaxDetailsDirect)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	owners := make([]RowOwner, MaxDetailsDirect) // all this instance's
	run("sealed=1000", func(db *DB, rows []Payout, bt Batch) error {
		return db.CommitIntake(ctx, rows, owners, []Batch{bt})
	})
	run("claimed=1000", func(db *DB, rows []Payout, _ Batch) error { return db.CommitIntake(ctx, rows, owners, nil) })
	run("insert=1000", func(db *DB, rows []Payout, _ Batch) error {
		_, err := db.InsertPayouts(ctx, rows)
		return err
	})
	run("old=insert+seal", func(db *DB, rows []Payout, bt Batch) error {
		if _, err := db.InsertPayouts(ctx, rows); err != nil {
			return err
		}
		return db.ClaimAndSeal(ctx, bt)
	})
}

// BenchmarkAudit audits a ledger of PAYSTREAM_BENCH_AUDIT (default 200,000) payouts, a fifth
// of them sealed into 1000-detail batches.
func BenchmarkAudit(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("PAYSTREAM_BENCH_AUDIT")); err == nil {
		n = v
	}
	db := mustOpenLedger(b)
	for i := 0; i < n/5/1000; i++ {
		mustSeal(b, db, fmt.Sprintf("A%d", i), fmt.Sprintf("a%dx", i), 1000)
	}
	for done := n / 5; done < n; done += 3000 {
		if _, err := db.InsertPayouts(context.Background(), randomGroup(min(3000, n-done))); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mustAuditClean(b, db.now(), db.Path())
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "payouts/s")
}

// BenchmarkParseBody reads a 1000-detail direct create body (as the rail encodes it, each
// detail with a name ciphertext) through scanBody's fast path and, as the baseline in the
// same run, through json.Unmarshal.
func BenchmarkParseBody(b *testing.B) {
	req := wechatpay.CreateBatchRequest{AppID: "wxa0000000000000001", BatchName: "活动奖励", BatchRemark: "活动奖励",
		OutBatchNo: "B0000000000000000000000000001", TotalNum: 1000, TransferSceneID: "1001"}
	for i := range 1000 {
		key := randomKey()
		req.TotalAmount += wechatpay.Fen(100 + i)
		req.TransferDetailList = append(req.TransferDetailList, wechatpay.TransferDetailInput{OpenID: "o" + key, OutDetailNo: key,
			TransferAmount: wechatpay.Fen(100 + i), TransferRemark: "活动奖励", UserName: strings.Repeat("QUJD", 86)})
	}
	body, err := wechatpay.MarshalBody(req)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if cb, ok := scanBody(body); !ok || len(cb.Details) != 1000 {
				b.Fatal("the rail's body left the fast path")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var cb createBody
			if err := json.Unmarshal(body, &cb); err != nil || len(cb.Details) != 1000 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBillLifecycle takes each of b.N bills (sealed untimed, 1000 to a batch) through
// what the bills rail writes for it on the happy path: its first send marked, WeChat's
// create answer (WAIT_USER_CONFIRM), the payee's confirmation arriving as a callback
// (SUCCESS). Each is a transaction of its own, synchronous=FULL; cpu-µs/bill is the
// process's CPU time, which the disk's fsync latency does not blur.
func BenchmarkBillLifecycle(b *testing.B) {
	ctx := context.Background()
	db := mustOpenLedger(b)
	var bills []Payout
	for i := 0; len(bills) < b.N; i++ {
		bills = append(bills, mustSealBills(b, db, fmt.Sprintf("BB%d", i), fmt.Sprintf("b%dx", i), min(1000, b.N-len(bills)))...)
	}
	b.ResetTimer()
	cpu := processCPU(b)
	for i, p := range bills[:b.N] {
		no := p.OutDetailNo
		if err := db.RecordBillCreates(ctx, []BillCreateRecord{{OutBillNo: no, BillCreate: BillCreate{Outcome: SubmitRetry, NextAt: db.now().Add(time.Minute)}}}); err != nil {
			b.Fatal(err)
		}
		tn := "T" + strconv.Itoa(i)
		if err := db.RecordBillCreate(ctx, no, BillCreate{Outcome: SubmitAccepted, NextAt: db.now().Add(time.Minute),
			State: BillState{State: PayoutWaitUserConfirm, TransferBillNo: tn, PackageInfo: "pkg", CreateTime: db.now()}}); err != nil {
			b.Fatal(err)
		}
		if _, err := db.ApplyBillCallback(ctx, "n"+strconv.Itoa(i), no, BillNotice{MchID: p.MchID, Amount: p.Amount,
			BillState: BillState{State: PayoutSuccess, TransferBillNo: tn}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/bill")
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
