package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"

	_ "github.com/mattn/go-sqlite3" // the ledger's driver, for finalize
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// rawIntake fetches and acks the next n messages of the stream, up to lastSeq, through its
// own durable consumer (same settings as the processors'), the way a do-nothing consumer would:
// fetch up to fetchBatch, ack each, repeat. With claim set, it first claims every fetched
// message's key in a KV bucket of its own (internal/claims, as the processor does), which
// is the least that cross-replica ownership costs. It returns messages/s, measured until
// the server has every ack.
func (e *env) rawIntake(ctx context.Context, lastSeq uint64, count, fetchBatch int, claim bool) (Rate, error) {
	durable := "raw"
	var store *claims.Store
	if claim {
		durable = "rawclaim"
		// The processor's claims bucket as broker.Ensure makes it, under another name.
		kv, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: "bench_raw_claims", TTL: e.topo.ClaimsTTL, Storage: jetstream.FileStorage, Replicas: e.topo.Replicas, History: 1,
		})
		if err != nil {
			return Rate{}, fmt.Errorf("raw claims bucket: %w", err)
		}
		store = claims.New(e.js, kv, "raw")
	}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, e.topo.Stream, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: e.topo.AckWait, MaxDeliver: e.topo.MaxDeliver,
		BackOff: e.topo.Backoff, MaxAckPending: e.topo.MaxAckPending, FilterSubject: e.topo.Subjects, Replicas: e.topo.Replicas,
	})
	if err != nil {
		return Rate{}, fmt.Errorf("raw consumer: %w", err)
	}
	start, cpu := time.Now(), processCPU()
	n := 0
	var fetching, claiming, acking time.Duration
	var msgs []jetstream.Msg
	var keys []claims.Item
	digest := make([]byte, claims.DigestSize) // the processor claims with the content hash; its size is what costs
	for n < count {
		t := time.Now()
		b, err := cons.Fetch(fetchBatch, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return Rate{}, fmt.Errorf("raw fetch: %w", err)
		}
		msgs, keys = msgs[:0], keys[:0]
		for m := range b.Messages() {
			msgs = append(msgs, m)
			keys = append(keys, claims.Item{Key: claims.Key(benchMchID, m.Headers().Get(jetstream.MsgIDHeader)), Digest: digest})
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return Rate{}, fmt.Errorf("raw fetch: %w", err)
		}
		fetching += time.Since(t)
		if store != nil && len(keys) > 0 {
			t = time.Now()
			if _, err := store.Claim(ctx, keys); err != nil {
				return Rate{}, fmt.Errorf("raw claim: %w", err)
			}
			claiming += time.Since(t)
		}
		t = time.Now()
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return Rate{}, fmt.Errorf("raw ack: %w", err)
			}
			n++
		}
		acking += time.Since(t)
		if ctx.Err() != nil {
			return Rate{}, ctx.Err()
		}
	}
	t := time.Now()
	end, err := e.waitAcked(ctx, durable, lastSeq, time.Minute)
	if err != nil {
		return Rate{}, err
	}
	acking += end.Sub(t)
	r := newRate(n, end.Sub(start))
	r.Stages = &Stages{Fetch: fetching.Seconds(), Claim: claiming.Seconds(), Ack: acking.Seconds()}
	r.CPU = (processCPU() - cpu).Seconds()
	return r, nil
}

// Stages is where the wall time of a raw intake measurement went, in seconds, step by step
// of its loop (what is left of Rate.Seconds is the loop itself).
type Stages struct {
	Fetch float64 `json:"fetch_s"`           // from Fetch until its batch is read
	Claim float64 `json:"claim_s,omitempty"` // KV claims, with claim set
	Ack   float64 `json:"ack_s"`             // Ack calls, then the wait until the server holds every ack
}

// ledgerCommit measures the ledger's share of intake apart from NATS: n payouts like
// prefill's committed to a new ledger at dataDir/ledger.db (synchronous=FULL, as the
// processor's) through InsertPayouts in groups of group, one transaction each, as intake
// commits a fetched batch.
func ledgerCommit(ctx context.Context, dataDir string, n, group int) (Rate, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Rate{}, err
	}
	db, err := ledger.Open(ctx, filepath.Join(dataDir, "ledger.db"))
	if err != nil {
		return Rate{}, err
	}
	rng := rand.New(rand.NewPCG(4, 4^0x5851f42d4c957f2d))
	ps := make([]ledger.Payout, group)
	var spent time.Duration
	for done := 0; done < n; done += group {
		part := ps[:min(group, n-done)]
		fillPayouts(rng, part, done)
		t := time.Now()
		if _, err := db.InsertPayouts(ctx, part); err != nil {
			return Rate{}, errors.Join(fmt.Errorf("ledger commit: %w", err), db.Close())
		}
		spent += time.Since(t)
	}
	return newRate(n, spent), db.Close()
}

// processorIntake runs the real processor (app.Run: intake, sealer, driver, outcomes) on the
// ledger at dataDir/ledger.db, against an idle, production-paced sandbox process, until the shared
// durable consumer has acked every message up to lastSeq; the sandbox runs at the lowest CPU
// priority (sandbox.yield), as WeChat's servers share no CPU with us. The clock starts when the
// processor is ready (its start-up is reported apart, as StartupS). With profile set, a CPU
// profile of the measured interval is written there.
func (e *env) processorIntake(ctx context.Context, dataDir string, n int, lastSeq uint64, profile string) (Rate, error) {
	// Production pacing: full batches are sealed and created as they fill, the first query is
	// a minute away, so the sandbox sees a create per 1000 payouts and nothing else. It runs
	// as a process of its own: its RSA work is not the processor's intake.
	sb, err := e.startSandbox(ctx, wechatpaytest.DefaultOptions(), dataDir)
	if err != nil {
		return Rate{}, err
	}
	defer sb.Close()
	if err := sb.yield(); err != nil {
		return Rate{}, err
	}
	logs, err := os.OpenFile(filepath.Join(dataDir, "processor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Rate{}, err
	}
	defer logs.Close()
	cfg := e.processorConfig(dataDir, sb.URL())
	cfg.HTTP.Listen = "127.0.0.1:0" // for the intake stages' counters, read once the clock stops
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return Rate{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return Rate{}, err
		}
		defer pprof.StopCPUProfile()
	}
	launched := time.Now()
	p, err := startProcessor(ctx, cfg, logs)
	if err != nil {
		return Rate{}, err
	}
	cpu := processCPU() // startProcessor returns once it is ready
	end, err := e.waitAcked(ctx, cfg.NATS.Topology.Consumer, lastSeq, 5*time.Minute)
	cpu = processCPU() - cpu
	var busy *Busy
	if err == nil {
		busy, err = scrapeBusy(ctx, "http://"+p.addrs.HTTP+"/metrics")
	}
	err = errors.Join(err, p.Stop())
	if err != nil {
		return Rate{}, err
	}
	r := newRate(n, end.Sub(p.ready))
	r.CPU, r.StartupS, r.Busy = cpu.Seconds(), p.ready.Sub(launched).Seconds(), busy
	return r, nil
}

// Busy is how long each of the processor's intake stages worked over a measurement, in
// seconds (paystream_intake_stage_seconds_total, from the processor's /metrics). The stages
// overlap, each on a goroutine of its own, so each over Rate.Seconds is the share of the time
// that stage was busy.
type Busy struct {
	Fetch    float64 `json:"fetch_s"` // waiting for the server to deliver full groups
	Validate float64 `json:"validate_s"`
	Claim    float64 `json:"claim_s"`  // the ledger lookup and the KV claims
	Commit   float64 `json:"commit_s"` // the ledger transaction and the acks
}

// scrapeBusy reads the intake stages' counters from a processor's metrics at url.
func scrapeBusy(ctx context.Context, url string) (*Busy, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("processor metrics: %w", err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("processor metrics: %w", err)
	}
	b := &Busy{}
	for stage, dst := range map[string]*float64{"fetch": &b.Fetch, "validate": &b.Validate, "claim": &b.Claim, "commit": &b.Commit} {
		series := `paystream_intake_stage_seconds_total{stage="` + stage + `"} `
		i := bytes.Index(text, []byte("\n"+series))
		if i < 0 {
			return nil, fmt.Errorf("processor metrics: no %s", series)
		}
		v, _, _ := bytes.Cut(text[i+1+len(series):], []byte("\n"))
		if *dst, err = strconv.ParseFloat(string(v), 64); err != nil {
			return nil, fmt.Errorf("processor metrics: %s%s: %w", series, v, err)
		}
	}
	return b, nil
}

// prefill creates the ledger dataDir/ledger.db holding n payouts with random 24-character
// upstream keys (as an upstream's UUID-like ids are), inserted through InsertPayouts in large
// groups, then made final (DUPLICATE, no batch) with one SQL UPDATE beside the ledger API:
// moving millions of rows through the API's per-batch transitions would take most of the
// time budget, and what intake touches (the key index, the append-only payouts table and its
// indexes) is the same as in a ledger whose rows were paid. Final rows are never re-read at
// start; RECEIVED ones would all be claimed by intake's resume.
func prefill(ctx context.Context, dataDir string, n int, seed uint64) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	db, err := ledger.Open(ctx, filepath.Join(dataDir, "ledger.db"))
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	const group = 50_000
	ps := make([]ledger.Payout, group)
	for done := 0; done < n; done += group {
		part := ps[:min(group, n-done)]
		fillPayouts(rng, part, done)
		if _, err := db.InsertPayouts(ctx, part); err != nil {
			return errors.Join(fmt.Errorf("prefill: %w", err), db.Close())
		}
	}
	if err := db.Close(); err != nil {
		return err
	}
	return finalize(ctx, db.Path())
}

// fillPayouts fills ps with payouts with random 24-character keys, the first at stream
// sequence done+1.
func fillPayouts(rng *rand.Rand, ps []ledger.Payout, done int) {
	for i := range ps {
		key := randomKey(rng)
		h := sha256.Sum256([]byte(key))
		ps[i] = ledger.Payout{
			OutDetailNo: key, MchID: wechatpaytest.DefaultMchID, AppID: "wxa0000000000000001",
			OpenID: "o" + key, Remark: "活动奖励", SceneID: "1001", Rail: payout.RailDirect,
			GroupKey: "prefill", Amount: 100 + rng.Int64N(20000), ContentHash: h[:], StreamSeq: uint64(done + i + 1),
		}
	}
}

// finalize moves every RECEIVED payout of the ledger file at path to DUPLICATE.
func finalize(ctx context.Context, path string) error {
	sdb, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		return err
	}
	// Raw SQL bypasses the ledger, so the totals it keeps are rebuilt in the same breath.
	_, err = sdb.ExecContext(ctx, `UPDATE payouts SET state = 'DUPLICATE', fail_reason = 'bench prefill' WHERE state = 'RECEIVED';
		DELETE FROM payout_totals; INSERT INTO payout_totals SELECT state, count(*), sum(amount) FROM payouts GROUP BY state;`)
	if err := errors.Join(err, sdb.Close()); err != nil {
		return err
	}
	// Flush the freshly written file now: otherwise the processor's first checkpoint fsync
	// waits for gigabytes of dirty pages, which a ledger that grew over months never has.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

const keyChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomKey is a random 24-character [0-9A-Za-z] out_detail_no.
func randomKey(rng *rand.Rand) string {
	b := make([]byte, 24)
	for i := range b {
		b[i] = keyChars[rng.IntN(len(keyChars))]
	}
	return string(b)
}

// copyLedger copies the ledger file of the directory from (closed, its WAL checkpointed by
// finalize) into the new directory to, and syncs the copy: each growth round starts from the
// same prefilled ledger, none of its pages dirty, as an empty round starts from nothing.
func copyLedger(from, to string) error {
	if st, err := os.Stat(filepath.Join(from, "ledger.db-wal")); err == nil && st.Size() > 0 {
		return fmt.Errorf("copy ledger: %s has a WAL of %d bytes: not checkpointed", from, st.Size())
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	src, err := os.Open(filepath.Join(from, "ledger.db"))
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(to, "ledger.db"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	return errors.Join(err, dst.Sync(), dst.Close())
}
