package pipeline

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

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

// intake moves payout requests from the shared durable consumer into the ledger, writing
// each payout row once (issue 17): for each fetched group it validates every message, claims
// the ownership of the new keys across replicas (claims.Store, each claim naming the message's
// stream sequence), then commits the group in ONE ledger transaction with every row already
// in its state (ledger.CommitIntake): a key another instance owns is recorded DUPLICATE; owned
// payouts that fill a batch within the group are sealed into it in the same transaction (its
// number, members and frozen bodies: docs/money-rules.md#commit-first); the rest are recorded
// CLAIMED for the sealer. Only then are the messages acked. Invalid messages, and requests for
// a merchant this processor does not pay for, are dead-lettered with their reason and
// terminated.
//
// A claim is made before the row exists, so a message whose key another instance claimed for
// this very message (the same stream sequence) may not be committed by that instance yet: it
// is handed back (naked) for the owner to take in, never recorded as a duplicate here. A
// claim naming another message (a re-publish) means the key is the owner's: DUPLICATE. A crash
// between claim and commit leaves only the claim: the message, never acked, comes back, and
// its owner (this instance, restarted) commits it; if the owner is lost for good, `processor
// adopt` takes its claims (docs/operations.md).
//
// Three stages overlap, each on its own goroutine: fetching group N+2, claiming group N+1, and
// committing and acking group N. A group is acked only after its own claims and commit
// (docs/money-rules.md#commit-first and #ambiguous hold per group); the overlap hides the
// fetch, KV and fsync round trips behind each other's work. Claimed groups queue for the
// commit (claimedQueue) so that a commit held up by the disk (an fsync or checkpoint that
// takes 100 ms where most commits take 15) does not stop fetching and claiming.
//
// One message never harms its neighbours: a message that cannot be dead-lettered is naked
// alone (it comes back after RetryDelay) and the rest of its group goes on. A group whose
// claims or commit fail is not acked: JetStream redelivers it. RECEIVED payouts (a ledger of
// an earlier version, which committed before claiming, or a key repeated after its first
// message was handed back) are claimed by the sweep (every SweepEvery, and at start).
type intake struct {
	cfg      IntakeConfig
	cons     jetstream.Consumer
	nc       *nats.Conn // cons's connection: held payouts are acked through it (ackRef)
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

	rails  map[string]rail // build the bodies of the batches sealed at commit
	sealed func()          // wakes the driver
	hold   *holding
	watch  *watch // nil: unwatched (tests)

	// Used only by row, which runs on the fetch stage (or in adoption, with no intake running):
	mac       hash.Hash               // HMAC-SHA256 under hashKey
	buf       []byte                  // canonical content, reused
	groupKeys map[batching.Key]string // Key.String of the keys seen, up to maxGroupKeys

	pending *pendingSet
	m       *metrics.Metrics
	stage   stageClocks
	prog    *progress
	leased  func() bool // nil: always (Deps.Leased)
}

// stageClocks are intake's stage counters of paystream_intake_stage_seconds_total, each
// added to by its stage's goroutine only.
type stageClocks struct{ fetch, validate, claim, commit stageClock }

func newStageClocks(m *metrics.Metrics) stageClocks {
	c := func(stage string) stageClock { return stageClock{m.IntakeStageSeconds.WithLabelValues(stage)} }
	return stageClocks{fetch: c("fetch"), validate: c("validate"), claim: c("claim"), commit: c("commit")}
}

// stageClock is one stage's counter.
type stageClock struct{ c prometheus.Counter }

// since adds the time since start and returns now.
func (s stageClock) since(start time.Time) time.Time {
	now := time.Now()
	s.c.Add(now.Sub(start).Seconds())
	return now
}

// errLeaseStale: intake may not claim (Deps.Leased or Deps.MayClaim is false: the heartbeat
// lease is stale, or an instance of an older claim protocol is alive), so nothing is claimed.
var errLeaseStale = errors.New("claims paused: the heartbeat lease is stale or an older version is alive")

// fetched is one fetch's messages, validated (the fetch stage validates, so that the claim
// stage only claims): n messages came, g holds the valid ones.
type fetched struct {
	g   claimedGroup
	n   int
	err error
}

// claimedQueue is how many claimed groups may wait for the commit stage: enough to ride out
// a slow commit (in the bench about one commit in four took over 30 ms and one in twenty over
// 80 ms, against a claim stage of about 25 ms a group) and then catch up, as a commit has
// slack; their messages stay unacked meanwhile, well inside max-ack-pending.
const claimedQueue = 4

// shutdownGrace bounds how long the groups in hand may take to be claimed and committed after
// shutdown has begun; a group not committed by then is not acked and comes back.
const shutdownGrace = 10 * time.Second

// handBackDelay is how long a message handed back to its key's owner (see intake) waits
// before JetStream delivers it again, to this replica or another.
const handBackDelay = time.Second

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
	claimed := make(chan claimedGroup, claimedQueue)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for g := range claimed {
			start := time.Now()
			in.watch.begin(watchCommit)
			err := in.commit(work, ctx.Done(), g)
			in.watch.end(watchCommit)
			in.stage.commit.since(start)
			if err != nil {
				// Nothing of this group was acked: JetStream redelivers it, and its keys'
				// claims are this instance's, so it takes them in then.
				in.log.Error("intake commit failed; the group will be redelivered", "messages", len(g.msgs), "err", err)
			}
		}
		// Stopping: what is held is committed CLAIMED (the sealer resumes it at the next start).
		in.watch.begin(watchCommit)
		defer in.watch.end(watchCommit)
		if err := in.commit(work, ctx.Done(), claimedGroup{short: true}); err != nil {
			in.log.Error("intake could not commit the payouts it held; they will be redelivered", "err", err)
		}
	}()
	defer func() { close(claimed); <-finished }()
	sweeps := time.NewTicker(in.cfg.SweepEvery)
	defer sweeps.Stop()
	// Each warning has its own clock: a fetch failure must not hide a pause, nor the reverse.
	var fetchWarned, pauseWarned time.Time
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
			if time.Since(fetchWarned) > 10*time.Second {
				in.log.Warn("fetch failed", "err", g.err)
				fetchWarned = time.Now()
			}
			claimed <- claimedGroup{short: true} // no backlog in sight: what is held is committed
			continue
		}
		start := time.Now()
		in.watch.begin(watchClaim)
		c, err := in.claim(work, g.g)
		in.watch.end(watchClaim)
		in.stage.claim.since(start)
		switch {
		case errors.Is(err, errLeaseStale):
			// Handed back: logged once in a while, as long as the pause lasts.
			if time.Since(pauseWarned) > 10*time.Second {
				in.log.Warn("intake handed a group back", "messages", g.n, "err", err)
				pauseWarned = time.Now()
			}
			continue
		case err != nil:
			// Nothing of this group was acked or committed: JetStream redelivers it.
			in.log.Error("intake claims failed; the group will be redelivered", "messages", g.n, "err", err)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		claimed <- c
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
		start := time.Now()
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
		in.m.IntakeReceived.Add(float64(len(msgs)))
		in.prog.received.Add(int64(len(msgs)))
		if len(msgs) == in.cfg.FetchBatch { // a short fetch waited for work, not for the server
			start = in.stage.fetch.since(start)
		} else {
			start = time.Now()
		}
		in.watch.begin(watchValidate)
		g := in.validate(ctx, msgs)
		in.watch.end(watchValidate)
		in.stage.validate.since(start)
		g.short = endsBacklog(msgs, in.cfg.FetchBatch)
		if !send(fetched{g: g, n: len(msgs)}) { // an empty one too: held payouts wait for no backlog
			return
		}
	}
}

// endsBacklog reports whether a fetch of up to batch messages that brought msgs found the
// end of the backlog: it came back short (it waited for work, not for the server), or the
// server had nothing more for the consumer when it delivered the last message. Either way
// the payouts intake holds for a batch to fill are committed now, rather than after the next
// fetch has waited fetch-max-wait for nothing.
func endsBacklog(msgs []jetstream.Msg, batch int) bool {
	if len(msgs) < batch {
		return true
	}
	md, err := msgs[len(msgs)-1].Metadata()
	return err == nil && md.NumPending == 0
}

// claimedGroup is a fetched group, validated and claimed, waiting for its commit and acks.
// msgs[i] is the message of rows[i]; a nil one was already terminated or handed back.
type claimedGroup struct {
	msgs   []jetstream.Msg
	rows   []ledger.Payout
	fresh  []int          // indexes of rows new to the ledger, claimed, to commit now
	owners []claims.Owner // owners[j] owns rows[fresh[j]]
	known  []int          // indexes of rows whose key the ledger holds (or that repeat a key of the group)
	short  bool           // the fetch found the end of the backlog (endsBacklog)
}

// claim claims the keys of g's valid requests (validate made g) and sorts them into those new
// to the ledger and those it holds. A message whose key another instance claimed for this
// very message is handed back. An error (the ledger unreadable, the lease not held, a claim
// not settled) fails the group: nothing of it is committed or acked.
func (in *intake) claim(ctx context.Context, g claimedGroup) (claimedGroup, error) {
	if len(g.rows) == 0 {
		return g, nil
	}
	keys := make([]string, len(g.rows))
	for i, r := range g.rows {
		keys[i] = r.OutDetailNo
	}
	known, err := in.db.Known(ctx, keys)
	if err != nil {
		return g, fmt.Errorf("ledger lookup: %w", err)
	}
	seen := make(map[string]bool, len(g.rows))
	for i, k := range keys {
		if known[i] || seen[k] {
			g.known = append(g.known, i)
			continue
		}
		seen[k] = true
		g.fresh = append(g.fresh, i)
	}
	if in.leased != nil && !in.leased() {
		// An adopter may be reading this instance's claims, or an older version would misread
		// them: take none. The group goes back at once, for a replica that may claim.
		for _, m := range g.msgs {
			if m != nil {
				if err := m.NakWithDelay(handBackDelay); err != nil {
					in.log.Warn("nak failed", "err", err) // it comes back after ack-wait instead
				}
			}
		}
		return g, errLeaseStale
	}
	// Known keys are claimed too (for them a read: the key exists): a key this ledger holds
	// as another instance's DUPLICATE (recorded from a re-publish) may have been claimed for
	// this very message, which that instance has then perhaps not committed; acking it here
	// would lose it.
	all := append(slices.Clone(g.fresh), g.known...)
	items := make([]claims.Item, len(all))
	for j, i := range all {
		r := &g.rows[i]
		items[j] = claims.Item{Key: claims.Key(r.MchID, r.OutDetailNo), Digest: r.ContentHash, StreamSeq: r.StreamSeq}
	}
	owners, err := in.claims.Claim(ctx, items)
	if err != nil {
		return g, fmt.Errorf("claim: %w", err)
	}
	fresh, stored := g.fresh[:0], g.known[:0]
	g.owners = make([]claims.Owner, 0, len(g.fresh))
	for j, i := range all {
		o := owners[j]
		if o.Instance != in.claims.Instance() && o.StreamSeq != 0 && o.StreamSeq == g.rows[i].StreamSeq {
			// The owner claimed this very message and may not have committed it yet: only
			// it may take it in.
			in.log.Warn("payout claimed by another processor for this message; handed back", "out_detail_no", g.rows[i].OutDetailNo,
				"owner", o.Instance, "stream_seq", o.StreamSeq)
			in.m.IntakeHandedBack.Inc()
			if err := g.msgs[i].NakWithDelay(handBackDelay); err != nil {
				in.log.Warn("nak failed", "err", err) // it comes back after ack-wait instead
			}
			g.msgs[i] = nil
			continue
		}
		if j < len(g.fresh) {
			fresh = append(fresh, i)
			g.owners = append(g.owners, o)
		} else {
			stored = append(stored, i)
		}
	}
	g.fresh, g.known = fresh, stored
	return g, nil
}

// validate decodes and checks msgs; the refused ones are dead-lettered (or naked).
func (in *intake) validate(ctx context.Context, msgs []jetstream.Msg) claimedGroup {
	var g claimedGroup
	g.msgs = make([]jetstream.Msg, 0, len(msgs))
	g.rows = make([]ledger.Payout, 0, len(msgs))
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
		row, err := in.row(md, rail, &req)
		if err != nil {
			in.refuse(ctx, m, payout.ClassInvalid, err.Error())
			continue
		}
		g.msgs = append(g.msgs, m)
		g.rows = append(g.rows, row)
	}
	return g
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

// holding is what intake's commit stage holds back: owned payouts, claimed and not yet
// committed, their messages unacked, until their batch fills (then each row is written once,
// sealed) or the stream runs short, when they are committed CLAIMED for the sealer. Its
// batcher keys items by the message's stream sequence; the ledger's seqs (and so the batch
// numbers) are given at commit. Only the commit stage uses it.
type holding struct {
	b    *batching.Batcher
	rows map[int64]*heldRow // by stream sequence
	keys map[string]int64   // out_detail_no → stream sequence of its held row
}

// heldRow is one held payout and every delivery of its message in hand. It holds a copy of
// the row: a pointer into its fetched group's rows would keep all of them alive while one
// waits for its batch (a payout of a rare group key waits up to batching's max-wait), and did:
// a processor taking in a backlog of 1M peaked at 895 MB instead of 160. For the same reason
// it keeps of each delivery only where its ack goes (ackRef), not the message.
type heldRow struct {
	row  ledger.Payout
	acks []ackRef
}

// ackRef is what a held payout keeps of one delivery of its message: the reply subject that
// JetStream reads acknowledgements on; commit acks every message it committed through one. A
// held jetstream.Msg kept the whole request alive (its data and parsed headers, about 1 KB)
// until the payout's batch filled: with thousands held, the processor's peak RSS at a backlog
// of 1M was about 25 MB higher (README, "Where the peak goes"). "" is no delivery (a nil
// message: dead-lettered already, or a test's).
type ackRef string

func refOf(m jetstream.Msg) ackRef {
	if m == nil {
		return ""
	}
	return ackRef(m.Reply())
}

// JetStream's acknowledgement bodies, as jetstream.Msg's Ack and NakWithDelay send them.
var ackBody = []byte("+ACK")

func nakBody(delay time.Duration) []byte {
	return fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds())
}

// reply publishes body to each of refs (as jetstream.Msg does: fire and forget; a lost ack or
// nak means a redelivery, which the ledger absorbs, or a redelivery after ack-wait).
func (in *intake) reply(refs []ackRef, body []byte, what string) {
	for _, r := range refs {
		if r == "" {
			continue
		}
		if err := in.nc.Publish(string(r), body); err != nil {
			in.log.Warn(what+" failed", "err", err)
		}
	}
}

func newHolding(cfg batching.Config) (*holding, error) {
	b, err := batching.New(cfg)
	if err != nil {
		return nil, err
	}
	return &holding{b: b, rows: map[int64]*heldRow{}, keys: map[string]int64{}}, nil
}

// add holds r and returns the batches it fills.
func (h *holding) add(r *ledger.Payout, m jetstream.Msg, now time.Time) []batching.Batch {
	id := int64(r.StreamSeq)
	h.rows[id] = &heldRow{row: *r, acks: []ackRef{refOf(m)}}
	h.keys[r.OutDetailNo] = id
	return h.b.Add(batching.Item{Seq: id, OutDetailNo: r.OutDetailNo, Amount: r.Amount, Group: r.GroupKey, Rail: r.Rail, At: now})
}

// take removes the rows of bs from the holding and returns them, batch by batch.
func (h *holding) take(bs []batching.Batch) [][]*heldRow {
	out := make([][]*heldRow, len(bs))
	for k, b := range bs {
		out[k] = make([]*heldRow, 0, len(b.Items))
		for _, it := range b.Items {
			hr := h.rows[it.Seq]
			delete(h.rows, it.Seq)
			delete(h.keys, hr.row.OutDetailNo)
			out[k] = append(out[k], hr)
		}
	}
	return out
}

// commit records a claimed group in the ledger and acks what it committed. Rows another
// instance owns are recorded DUPLICATE at once; owned new rows are held until a batch of
// them fills or is due, which is sealed with them in the same transaction (each row written
// once); when the group is short (the stream has no backlog), or after stop, every held row is
// committed CLAIMED and handed to the sealer. Messages of held rows are acked when their rows
// commit. Rows whose key the ledger holds go through InsertPayouts last (a key held here, or
// recorded in this very commit, included).
func (in *intake) commit(ctx context.Context, stop <-chan struct{}, g claimedGroup) error {
	me, now := in.claims.Instance(), time.Now()
	var dups []ledger.Payout
	var dupOwners []ledger.RowOwner
	var acks []ackRef
	var conflicts []conflict
	var full []batching.Batch
	for j, i := range g.fresh {
		r, o, m := g.rows[i], g.owners[j], g.msgs[i]
		switch {
		case o.Instance != me:
			r.State = ledger.PayoutDuplicate
			c := o.Conflicts(r.ContentHash)
			dups, dupOwners = append(dups, r), append(dupOwners, ledger.RowOwner{Instance: o.Instance, Conflict: c})
			if c {
				in.log.Error("conflicting payout: another processor owns this key with other content", "out_detail_no", r.OutDetailNo, "owner", o.Instance)
				conflicts = append(conflicts, conflict{m, "out_detail_no was already received, by processor " + o.Instance + ", with different content"})
			} else {
				in.log.Info("duplicate payout owned by another processor", "out_detail_no", r.OutDetailNo, "owner", o.Instance)
				acks = append(acks, refOf(m))
			}
		case !in.hold.attach(&r, m, &conflicts):
			full = append(full, in.hold.add(&r, m, now)...)
		}
	}
	known := g.known[:0:0]
	for _, i := range g.known {
		if !in.hold.attach(&g.rows[i], g.msgs[i], &conflicts) {
			known = append(known, i)
		}
	}
	full = append(full, in.hold.b.Due(now)...)
	batched := in.hold.take(full)
	var rest []*heldRow
	if g.short || isDone(stop) {
		for _, rs := range in.hold.take(in.hold.b.Flush()) {
			rest = append(rest, rs...)
		}
	}
	claimed, err := in.commitRows(ctx, dups, dupOwners, full, batched, rest)
	if err != nil {
		return err
	}
	for _, rs := range append(batched, rest) {
		for _, hr := range rs {
			acks = append(acks, hr.acks...)
		}
	}
	if len(known) > 0 {
		g.known = known
		if err := in.commitKnown(ctx, &g); err != nil {
			return err
		}
		for _, i := range known {
			acks = append(acks, refOf(g.msgs[i])) // "" when dead-lettered
		}
	}
	for _, c := range conflicts {
		in.refuse(ctx, c.msg, payout.ClassConflict, c.reason)
	}
	if len(claimed) > 0 {
		select {
		case in.claimed <- claimed:
		case <-stop: // CLAIMED in the ledger: the sealer resumes them at the next start
		}
	}
	in.reply(acks, ackBody, "ack")
	return nil
}

// conflict is a message to dead-letter as a conflict once its group is committed.
type conflict struct {
	msg    jetstream.Msg
	reason string
}

// attach adds m to the held row of r's key, if one is held: the same content is one more
// delivery of it, other content a conflict. It reports whether the key was held.
func (h *holding) attach(r *ledger.Payout, m jetstream.Msg, conflicts *[]conflict) bool {
	id, ok := h.keys[r.OutDetailNo]
	switch {
	case !ok:
		return false
	case bytes.Equal(h.rows[id].row.ContentHash, r.ContentHash):
		h.rows[id].acks = append(h.rows[id].acks, refOf(m))
	default:
		*conflicts = append(*conflicts, conflict{m, "out_detail_no was already received with different content"})
	}
	return true
}

// commitRows commits, in one transaction, the duplicates, the batches of held rows (each row
// written once, sealed) and the rest of the held rows CLAIMED, which it returns for the
// sealer. The ledger's seqs are given in that order; a batch's number comes from its first
// member's. On failure the held rows' messages are handed back.
func (in *intake) commitRows(ctx context.Context, dups []ledger.Payout, dupOwners []ledger.RowOwner,
	full []batching.Batch, batched [][]*heldRow, rest []*heldRow) ([]ledger.Payout, error) {
	n := len(dups) + len(rest)
	for _, rs := range batched {
		n += len(rs)
	}
	if n == 0 {
		return nil, nil
	}
	next := in.db.NextSeq()
	// rows never grows past n, so a batch's members and the CLAIMED rest are views of it.
	rows := make([]ledger.Payout, 0, n)
	owners := make([]ledger.RowOwner, 0, n)
	place := func(r ledger.Payout, state string, o ledger.RowOwner) int64 {
		r.Seq, r.State = next+int64(len(rows)), state
		rows, owners = append(rows, r), append(owners, o)
		return r.Seq
	}
	for k := range dups {
		place(dups[k], dups[k].State, dupOwners[k])
	}
	batches := make([]ledger.Batch, len(full))
	for k, b := range full {
		start := len(rows)
		for x, hr := range batched[k] {
			b.Items[x].Seq = place(hr.row, ledger.PayoutSealed, ledger.RowOwner{})
		}
		members := rows[start:len(rows):len(rows)]
		b.OutBatchNo = batching.OutBatchNo(in.db.InstanceID(), members[0].Seq)
		var err error
		if batches[k], err = sealable(in.rails, b, members); err != nil {
			return nil, in.giveBack(err, batched, rest)
		}
	}
	start := len(rows)
	for _, hr := range rest {
		place(hr.row, ledger.PayoutClaimed, ledger.RowOwner{})
	}
	claimed := rows[start:len(rows):len(rows)]
	if err := in.db.CommitIntake(ctx, rows, owners, batches); err != nil {
		return nil, in.giveBack(fmt.Errorf("ledger commit: %w", err), batched, rest)
	}
	committed := len(rows) - len(dups)
	in.m.IntakeCommitted.Add(float64(committed))
	in.prog.committed.Add(int64(committed))
	for _, o := range dupOwners {
		if !o.Conflict {
			in.m.IntakeDuplicates.Inc() // a conflict is dead-lettered, not a duplicate
		}
	}
	for _, lb := range batches {
		in.log.Info("batch sealed", "out_batch_no", lb.OutBatchNo, "details", lb.TotalNum, "amount", lb.TotalAmount)
	}
	if len(batches) > 0 {
		in.sealed()
	}
	return claimed, nil
}

// isDone reports whether stop is closed.
func isDone(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// giveBack hands the messages of held rows whose commit failed back to JetStream (they come
// back, and their claims are this instance's) and returns err.
func (in *intake) giveBack(err error, batched [][]*heldRow, rest []*heldRow) error {
	nak := nakBody(handBackDelay)
	for _, rs := range append(batched, rest) {
		for _, hr := range rs {
			in.reply(hr.acks, nak, "nak")
		}
	}
	return err
}

// commitKnown records the group's rows whose key the ledger holds (a redelivery, a
// re-publish, a key twice in the group) as InsertPayouts does: the same content is a no-op, other
// content a conflict, dead-lettered. A row it does insert (its key's first message was handed
// back) is RECEIVED, for the sweep.
func (in *intake) commitKnown(ctx context.Context, g *claimedGroup) error {
	rows := make([]ledger.Payout, len(g.known))
	for j, i := range g.known {
		rows[j] = g.rows[i]
	}
	results, err := in.db.InsertPayouts(ctx, rows)
	if err != nil {
		return fmt.Errorf("ledger insert: %w", err)
	}
	for j, r := range results {
		i := g.known[j]
		switch r.Status {
		case ledger.Conflict:
			// Recorded in the ledger's conflicts table; nothing was overwritten.
			in.refuse(ctx, g.msgs[i], payout.ClassConflict, "out_detail_no was already received with different content")
			g.msgs[i] = nil
		case ledger.Existing:
			in.m.IntakeDuplicates.Inc()
		case ledger.Inserted:
			in.m.IntakeCommitted.Inc()
			in.prog.committed.Add(1)
		}
	}
	return nil
}

// claimReceived takes ownership of RECEIVED rows (all in the pending set) across replicas
// and returns the ones this instance owns, still RECEIVED in the ledger. A payout another
// instance owns is recorded as DUPLICATE and leaves the set; one it owns with OTHER content
// is recorded as a DUPLICATE with other content, never paid. On error every row has left
// the pending set, still RECEIVED, for the next sweep.
func (in *intake) claimReceived(ctx context.Context, rows []ledger.Payout) ([]ledger.Payout, error) {
	if in.leased != nil && !in.leased() {
		// An adopter may be reading this instance's claims: take none it would not see.
		in.pending.drop(seqsOf(rows)...)
		return nil, errLeaseStale
	}
	items := make([]claims.Item, len(rows))
	for i, r := range rows {
		items[i] = claims.Item{Key: claims.Key(r.MchID, r.OutDetailNo), Digest: r.ContentHash, StreamSeq: r.StreamSeq}
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
		} else {
			in.log.Info("duplicate payout owned by another processor", "out_detail_no", r.OutDetailNo, "owner", o.Instance)
		}
		if err := in.db.MarkDuplicate(ctx, r.Seq, o.Instance, conflict); err != nil {
			// Neither the owned rows so far nor the rest reach the sealer: all leave the set.
			in.pending.drop(append(seqsOf(owned), seqsOf(rows[i:])...)...)
			return nil, fmt.Errorf("mark duplicate: %w", err)
		}
		if !conflict {
			in.m.IntakeDuplicates.Inc()
		}
		in.pending.drop(r.Seq)
	}
	return owned, nil
}

// sweep claims every RECEIVED payout that nothing is working on: not in the pending set, so
// neither intake nor the sealer holds it (a claim whose outcome stayed unknown until its
// context ended, a group cut short by a shutdown or a crash). Owned payouts go to the
// sealer, the others become DUPLICATE. It pages through the ledger by seq; each page is a
// piece of the claim stage's work (see watch).
func (in *intake) sweep(ctx context.Context) error {
	defer in.watch.end(watchClaim)
	var after int64
	swept := 0
	for {
		in.watch.begin(watchClaim) // a page
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
		owned, err := in.claimReceived(ctx, free)
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
		GroupKey:       in.groupKey(rail, r),
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

// maxGroupKeys bounds intake's memory of group key strings: a stream holds a few keys (a
// merchant's appids, scenes and rails), but batch name hints could make each request's its own.
const maxGroupKeys = 1024

// groupKey is batching.GroupKeyFor(rail, r), remembered: building the string ran for every
// payout, and the payouts of a stream share a few keys.
func (in *intake) groupKey(rail string, r *payout.Request) string {
	k := batching.KeyFor(rail, r)
	if s, ok := in.groupKeys[k]; ok {
		return s
	}
	if in.groupKeys == nil || len(in.groupKeys) >= maxGroupKeys {
		in.groupKeys = make(map[batching.Key]string)
	}
	s := k.String()
	in.groupKeys[k] = s
	return s
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
