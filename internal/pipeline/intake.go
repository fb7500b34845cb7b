package pipeline

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// IntakeConfig tunes the fetch loop.
type IntakeConfig struct {
	FetchBatch   int           `yaml:"fetch-batch"`    // messages per fetch, up to the batch cap
	FetchMaxWait time.Duration `yaml:"fetch-max-wait"` // how long a fetch waits for a full group
	// SweepEvery is how often RECEIVED payouts that nothing is working on (a claim that
	// failed, a group cut short) are claimed again while the processor runs.
	SweepEvery time.Duration `yaml:"sweep-every"`
	// RetryDelay is how long a message whose dead letter could not be published waits before
	// it is delivered again; the rest of its group goes on.
	RetryDelay time.Duration `yaml:"retry-delay"`
}

// redeliveryAlarm: a request delivered this many times (and every multiple) is logged at
// ERROR with its stream sequence: something keeps failing on it.
const redeliveryAlarm = 10

// intake moves payout requests from the shared durable consumer into the ledger: for each
// fetched group it validates every message, commits the valid ones in ONE ledger
// transaction, claims their ownership, and only then acks. Invalid messages, and requests
// for a merchant this processor does not pay for, are dead-lettered with their reason and
// terminated. Owned payouts go to the sealer still RECEIVED in the ledger: the sealer
// records the claim and the seal in one transaction (ClaimAndSeal).
//
// Three stages overlap, each on its own goroutine, connected by one-slot channels: fetching
// group N+2, committing group N+1, and claiming and acking group N. A group is acked only
// after its own commit and claims (docs/money-rules.md#commit-first and #ambiguous hold per group); the overlap hides the
// fetch, fsync and KV round trips behind each other's work.
//
// One message never harms its neighbours: a message that cannot be dead-lettered is naked
// alone (it comes back after RetryDelay) and the rest of its group goes on. A group whose
// claims fail is not acked; its payouts stay RECEIVED and the sweep claims them (every
// SweepEvery, and at start), so nothing depends on a redelivery reaching this replica.
type intake struct {
	cfg      IntakeConfig
	cons     jetstream.Consumer
	db       *ledger.DB
	claims   *claims.Store
	limits   payout.Limits
	product  string // ProductBatches or ProductBills: decides the rail
	merchant Merchant
	prefix   string // requests are published to <prefix>.<mchid>
	serial   string // the WeChat Pay key id every user_name_cipher must be made with
	hashKey  []byte
	dead     *deadLetters
	claimed  chan<- []ledger.Payout // to the sealer
	log      *slog.Logger

	mac hash.Hash // HMAC-SHA256 under hashKey; used only by the commit stage
	buf []byte    // canonical content, reused by the commit stage

	pending *pendingSet
	m       *metrics.Metrics
	prog    *progress
	leased  func() bool // nil: always (Deps.Leased)
}

// errLeaseStale: the heartbeat lease (Deps.Leased) is not held, so nothing is claimed.
var errLeaseStale = errors.New("heartbeat lease stale: nothing is claimed until it beats again")

type fetched struct {
	msgs []jetstream.Msg
	err  error
}

// shutdownGrace bounds how long the group in hand may wait for its claims after shutdown
// has begun; what is not claimed by then stays RECEIVED and is claimed at the next start.
const shutdownGrace = 10 * time.Second

func (in *intake) run(ctx context.Context) error {
	// The groups in hand are finished even when shutdown has begun, within a grace.
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		<-ctx.Done()
		select {
		case <-time.After(shutdownGrace):
			cancel()
		case <-work.Done():
		}
	}()

	if err := in.sweep(ctx); err != nil && ctx.Err() == nil {
		in.log.Error("sweeping unclaimed payouts", "err", err)
	}
	groups := make(chan fetched, 1)
	go in.fetch(ctx, groups)
	committed := make(chan committedGroup, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for g := range committed {
			if err := in.finish(work, ctx.Done(), g); err != nil {
				// Nothing of this group was acked: JetStream redelivers it, and the sweep
				// claims its payouts (they are committed) even if it never comes back here.
				in.log.Error("intake claims failed; payouts stay RECEIVED for the sweep", "messages", len(g.ok), "err", err)
			}
		}
	}()
	defer func() { close(committed); <-finished }()
	sweeps := time.NewTicker(in.cfg.SweepEvery)
	defer sweeps.Stop()
	var lastErr time.Time
	for {
		var g fetched
		var ok bool
		select {
		case g, ok = <-groups:
			if !ok {
				return nil
			}
		case <-sweeps.C:
			if err := in.sweep(ctx); err != nil && ctx.Err() == nil {
				in.log.Error("sweeping unclaimed payouts", "err", err)
			}
			continue
		}
		if g.err != nil {
			if time.Since(lastErr) > 10*time.Second {
				in.log.Warn("fetch failed", "err", g.err)
				lastErr = time.Now()
			}
			continue
		}
		in.m.IntakeReceived.Add(float64(len(g.msgs)))
		in.prog.received.Add(int64(len(g.msgs)))
		c, err := in.commit(work, g.msgs)
		if err != nil {
			// Nothing of this group was acked: JetStream redelivers it after AckWait.
			in.log.Error("intake group failed; will be redelivered", "messages", len(g.msgs), "err", err)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		committed <- c
	}
}

// fetch pulls groups of up to FetchBatch messages until ctx is done.
func (in *intake) fetch(ctx context.Context, groups chan<- fetched) {
	defer close(groups)
	send := func(f fetched) bool {
		select {
		case groups <- f:
			return true
		case <-ctx.Done():
			return false // unacked messages are redelivered
		}
	}
	for ctx.Err() == nil {
		b, err := in.cons.Fetch(in.cfg.FetchBatch, jetstream.FetchMaxWait(in.cfg.FetchMaxWait))
		if err != nil {
			if ctx.Err() == nil {
				send(fetched{err: err})
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && len(msgs) == 0 && ctx.Err() == nil {
			send(fetched{err: err})
			continue
		}
		if len(msgs) > 0 && !send(fetched{msgs: msgs}) {
			return
		}
	}
}

type accepted struct {
	msg jetstream.Msg
	req payout.Request
}

// committedGroup is a group whose valid requests are in the ledger, waiting for claims and
// acks. ok[i] is the message of rows[i]; a nil msg was already terminated or naked.
type committedGroup struct {
	ok      []accepted
	rows    []ledger.Payout
	toClaim []int // indexes of rows this instance must claim
}

// commit validates msgs, dead-letters the refused ones and inserts the valid ones in one
// ledger transaction. Only a failed ledger transaction fails the group.
func (in *intake) commit(ctx context.Context, msgs []jetstream.Msg) (committedGroup, error) {
	var c committedGroup
	c.ok = make([]accepted, 0, len(msgs))
	c.rows = make([]ledger.Payout, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			in.log.Error("message without JetStream metadata; naked", "subject", m.Subject(), "err", err)
			in.nak(m)
			continue
		}
		if md.NumDelivered >= redeliveryAlarm && md.NumDelivered%redeliveryAlarm == 0 {
			in.log.Error("payout request delivered many times", "stream_seq", md.Sequence.Stream, "deliveries", md.NumDelivered)
		}
		req, err := payout.Decode(m.Data())
		rail := in.railOf(&req)
		if err == nil {
			err = req.ValidateFor(rail, in.limits)
		}
		if err != nil {
			in.refuse(ctx, m, payout.ClassInvalid, err.Error())
			continue
		}
		if reason := in.merchant.refuse(in.prefix, m.Subject(), &req); reason != "" {
			in.refuse(ctx, m, payout.ClassMisrouted, reason)
			continue
		}
		if req.UserNameCipher != "" && req.WechatpaySerial != in.serial {
			in.refuse(ctx, m, payout.ClassInvalid, fmt.Sprintf("user_name_cipher was made with WeChat Pay key %s; this processor sends with %s", req.WechatpaySerial, in.serial))
			continue
		}
		c.ok = append(c.ok, accepted{msg: m, req: req})
		row, err := in.row(md, rail, &req)
		if err != nil {
			in.refuse(ctx, m, payout.ClassInvalid, err.Error())
			continue
		}
		c.rows = append(c.rows, row)
	}
	if len(c.rows) == 0 {
		return c, nil
	}
	results, err := in.insert(ctx, &c)
	if err != nil {
		return c, fmt.Errorf("ledger insert: %w", err)
	}
	for i, r := range results {
		if r.Status == ledger.Conflict {
			// Recorded in the ledger's conflicts table; nothing was overwritten.
			in.refuse(ctx, c.ok[i].msg, payout.ClassConflict, "out_detail_no was already received with different content")
			c.ok[i].msg = nil
		}
	}
	return c, nil
}

// refuse dead-letters m (which terminates it). If the dead letter cannot be published, m
// alone is naked and comes back after RetryDelay: its neighbours go on.
func (in *intake) refuse(ctx context.Context, m jetstream.Msg, class, reason string) {
	if err := in.dead.send(ctx, m, class, reason); err != nil {
		in.log.Error("dead letter failed; the message will be delivered again", "class", class, "err", err)
		in.nak(m)
		return
	}
	in.m.IntakeDeadLettered.WithLabelValues(class).Inc()
	in.prog.deadLettered.Add(1)
}

func (in *intake) nak(m jetstream.Msg) {
	if err := m.NakWithDelay(in.cfg.RetryDelay); err != nil {
		in.log.Warn("nak failed", "err", err) // it comes back after ack-wait instead
	}
}

// insert commits c's rows and picks, into c.toClaim, every payout this instance has
// committed but not claimed: a key seen twice in one group, or already pending (see
// pendingSet), maps to one claim.
func (in *intake) insert(ctx context.Context, c *committedGroup) ([]ledger.InsertResult, error) {
	in.pending.mu.Lock()
	defer in.pending.mu.Unlock()
	results, err := in.db.InsertPayouts(ctx, c.rows)
	if err != nil {
		return nil, err
	}
	var inserted, existing int
	for _, r := range results {
		switch r.Status {
		case ledger.Inserted:
			inserted++
		case ledger.Existing:
			existing++
		}
	}
	in.m.IntakeCommitted.Add(float64(inserted))
	in.m.IntakeDuplicates.Add(float64(existing))
	in.prog.committed.Add(int64(inserted))
	for i, r := range results {
		if r.Status != ledger.Conflict && r.State == ledger.PayoutReceived && !in.pending.seqs[r.Seq] {
			in.pending.seqs[r.Seq] = true
			c.rows[i].Seq = r.Seq
			c.rows[i].State = r.State
			c.toClaim = append(c.toClaim, i)
		}
	}
	return results, nil
}

// finish claims a committed group, hands the owned payouts to the sealer and acks every
// message. After stop, owned payouts are not handed over: they stay RECEIVED in the ledger
// and are claimed again (found owned) by the next sweep.
func (in *intake) finish(ctx context.Context, stop <-chan struct{}, c committedGroup) error {
	if len(c.toClaim) > 0 {
		rows := make([]ledger.Payout, len(c.toClaim))
		msgs := make([]jetstream.Msg, len(c.toClaim))
		for j, i := range c.toClaim {
			rows[j], msgs[j] = c.rows[i], c.ok[i].msg
		}
		owned, err := in.claim(ctx, rows, msgs)
		for j, i := range c.toClaim {
			c.ok[i].msg = msgs[j] // nil when claim dead-lettered it as a conflict
		}
		if err != nil {
			return err
		}
		if len(owned) > 0 {
			select {
			case in.claimed <- owned:
			case <-stop:
				in.pending.drop(seqsOf(owned)...)
			}
		}
	}
	for _, a := range c.ok {
		if a.msg != nil {
			if err := a.msg.Ack(); err != nil {
				// A lost ack means a redelivery, which the ledger and the claims absorb.
				in.log.Warn("ack failed", "err", err)
			}
		}
	}
	return nil
}

// claim takes ownership of rows (all in the pending set) across replicas and returns the
// ones this instance owns, still RECEIVED in the ledger. A payout another instance owns is
// recorded as DUPLICATE and leaves the set; one it owns with OTHER content (the same key
// sent again with another amount, say, and delivered to another replica) is a conflict: its
// message (msgs[i], when there is one) is dead-lettered as such (and set to nil) and the row is recorded as a DUPLICATE with other content, never paid. On error every row has
// left the pending set, still RECEIVED, for the next sweep.
func (in *intake) claim(ctx context.Context, rows []ledger.Payout, msgs []jetstream.Msg) ([]ledger.Payout, error) {
	if in.leased != nil && !in.leased() {
		// An adopter may be reading this instance's claims: take none it would not see.
		in.pending.drop(seqsOf(rows)...)
		return nil, errLeaseStale
	}
	items := make([]claims.Item, len(rows))
	for i, r := range rows {
		items[i] = claims.Item{Key: claims.Key(r.MchID, r.OutDetailNo), Digest: r.ContentHash}
	}
	owners, err := in.claims.Claim(ctx, items)
	if err != nil {
		in.pending.drop(seqsOf(rows)...)
		return nil, fmt.Errorf("claim: %w", err)
	}
	var owned []ledger.Payout
	for i, r := range rows {
		o := owners[i]
		if o.Instance == in.claims.Instance() {
			owned = append(owned, r)
			continue
		}
		conflict := o.Conflicts(r.ContentHash)
		if conflict {
			in.log.Error("conflicting payout: another processor owns this key with other content", "out_detail_no", r.OutDetailNo, "owner", o.Instance)
			if msgs != nil && msgs[i] != nil {
				in.refuse(ctx, msgs[i], payout.ClassConflict, "out_detail_no was already received, by processor "+o.Instance+", with different content")
				msgs[i] = nil
			}
		} else {
			in.log.Info("duplicate payout owned by another processor", "out_detail_no", r.OutDetailNo, "owner", o.Instance)
		}
		if err := in.db.MarkDuplicate(ctx, r.Seq, o.Instance, conflict); err != nil {
			// Neither the owned rows so far nor the rest reach the sealer: all leave the set.
			in.pending.drop(append(seqsOf(owned), seqsOf(rows[i:])...)...)
			return nil, fmt.Errorf("mark duplicate: %w", err)
		}
		if !conflict {
			in.m.IntakeDuplicates.Inc() // a conflict is dead-lettered (when its message is at hand), not a duplicate
		}
		in.pending.drop(r.Seq)
	}
	return owned, nil
}

// sweep claims every RECEIVED payout that nothing is working on: not in the pending set, so
// neither intake nor the sealer holds it (a claim whose outcome stayed unknown until its
// context ended, a group cut short by a shutdown or a crash). Owned payouts go to the
// sealer, the others become DUPLICATE. It pages through the ledger by seq.
func (in *intake) sweep(ctx context.Context) error {
	var after int64
	swept := 0
	for {
		// The scan and the check of the set happen under the set's lock (see pendingSet).
		in.pending.mu.Lock()
		ps, err := in.db.PayoutsAfter(ctx, ledger.PayoutReceived, after, in.cfg.FetchBatch)
		var free []ledger.Payout
		for _, p := range ps {
			if reason := in.merchant.refuse(in.prefix, in.prefix+"."+p.MchID, &payout.Request{MchID: p.MchID, SubMchID: p.SubMchID}); reason != "" {
				// Only a ledger written before merchants were checked can hold one; the
				// audit's foreign_merchant view names it. Never claimed, never paid.
				in.log.Error("RECEIVED payout not for this processor left alone", "out_detail_no", p.OutDetailNo, "reason", reason)
				continue
			}
			if !in.pending.seqs[p.Seq] {
				in.pending.seqs[p.Seq] = true
				free = append(free, p)
			}
		}
		in.pending.mu.Unlock()
		if err != nil || len(ps) == 0 {
			if swept > 0 {
				in.log.Warn("swept payouts nothing was working on", "payouts", swept)
			}
			return err
		}
		after = ps[len(ps)-1].Seq
		if len(free) == 0 {
			continue
		}
		owned, err := in.claim(ctx, free, nil)
		if err != nil {
			return err
		}
		swept += len(free)
		if len(owned) > 0 {
			select {
			case in.claimed <- owned:
			case <-ctx.Done():
				in.pending.drop(seqsOf(owned)...)
				return ctx.Err()
			}
		}
	}
}

func seqsOf(ps []ledger.Payout) []int64 {
	seqs := make([]int64, len(ps))
	for i, p := range ps {
		seqs[i] = p.Seq
	}
	return seqs
}

// railOf is the rail a request is paid on: the product this processor's merchant has
// decides (transfer bills take every request); on the batch API, sub_mchid picks the
// partner rail.
func (in *intake) railOf(r *payout.Request) string {
	if in.product == ProductBills {
		return payout.RailBills
	}
	return r.Rail()
}

// row turns a validated request into its ledger row. user_name arrives encrypted (the
// producer seals it with WeChat Pay's public key; plaintext is refused by validation), so
// only ciphertext is stored. The content hash is keyed and never covers the name.
func (in *intake) row(md *jetstream.MsgMetadata, rail string, r *payout.Request) (ledger.Payout, error) {
	p := ledger.Payout{
		OutDetailNo:    r.OutDetailNo,
		MchID:          r.MchID,
		AppID:          r.AppID,
		SubMchID:       r.SubMchID,
		OpenID:         r.OpenID,
		Remark:         r.Remark,
		SceneID:        r.SceneID,
		Rail:           rail,
		GroupKey:       batching.GroupKeyFor(rail, r),
		Amount:         r.Amount,
		UserNameCipher: r.UserNameCipher,
		ContentHash:    in.contentHash(r),
		StreamSeq:      md.Sequence.Stream,
		ReceivedAt:     md.Timestamp,
	}
	if rail == payout.RailBills {
		bi, err := newBillInfo(r)
		if err != nil {
			return ledger.Payout{}, fmt.Errorf("bill fields: %w", err)
		}
		p.BillInfo = bi
	}
	return p, nil
}

// contentHash is an HMAC over payout.Request.AppendContent: every field that decides what is
// paid to whom, and whether a name is present (the name's ciphertext is randomized, and
// WeChat checks the name against the openid's real name itself). A re-publish of the same
// key with the same payment is a no-op; anything else is a conflict. Every replica of a
// merchant derives the same key, so claims compare hashes across replicas.
func (in *intake) contentHash(r *payout.Request) []byte {
	if in.mac == nil {
		in.mac = hmac.New(sha256.New, in.hashKey)
	}
	in.mac.Reset()
	in.buf = r.AppendContent(in.buf[:0])
	in.mac.Write(in.buf)
	return in.mac.Sum(nil)
}
