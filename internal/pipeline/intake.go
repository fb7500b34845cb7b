package pipeline

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// IntakeConfig tunes the fetch loop.
type IntakeConfig struct {
	FetchBatch   int           `yaml:"fetch-batch"`    // messages per fetch, up to the batch cap
	FetchMaxWait time.Duration `yaml:"fetch-max-wait"` // how long a fetch waits for a full group
}

// intake moves payout requests from the shared durable consumer into the ledger: for each
// fetched group it validates every message, commits the valid ones in ONE ledger
// transaction, claims their ownership, and only then acks. Invalid messages are dead-lettered
// with their reason and terminated. Owned payouts go to the sealer still RECEIVED in the
// ledger: the sealer records the claim and the seal in one transaction (ClaimAndSeal), and a
// restart re-claims whatever is RECEIVED (the KV bucket is the record of ownership).
//
// Three stages overlap, each on its own goroutine, connected by one-slot channels: fetching
// group N+2, committing group N+1, and claiming and acking group N. A group is acked only
// after its own commit and claims (rules 2 and 3 hold per group); the overlap hides the
// fetch, fsync and KV round trips behind each other's work.
type intake struct {
	cfg     IntakeConfig
	cons    jetstream.Consumer
	db      *ledger.DB
	claims  *claims.Store
	limits  payout.Limits
	encrypt func(string) (string, error) // user_name → OAEP ciphertext
	hashKey []byte
	dead    *deadLetters
	claimed chan<- []ledger.Payout // to the sealer
	log     *slog.Logger

	mac hash.Hash // HMAC-SHA256 under hashKey; used only by the commit stage

	pending *pendingSet
}

// pendingSet holds the seqs of RECEIVED payouts that intake is claiming or has handed to
// the sealer, until the sealer has sealed them. A key redelivered while its payout is in the
// set is left alone: it is claimed, and batched, exactly once.
//
// Intake holds mu across the ledger insert that reads a payout's state and its check of
// the set; the sealer removes seqs only after their seal has committed. So a payout is
// either still in the set or read as SEALED by the insert, never read as RECEIVED and
// missing from the set once sealed.
type pendingSet struct {
	mu   sync.Mutex
	seqs map[int64]bool
}

func newPendingSet() *pendingSet { return &pendingSet{seqs: map[int64]bool{}} }

// drop removes seqs from the set.
func (p *pendingSet) drop(seqs ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range seqs {
		delete(p.seqs, s)
	}
}

type fetched struct {
	msgs []jetstream.Msg
	err  error
}

func (in *intake) run(ctx context.Context) error {
	groups := make(chan fetched, 1)
	go in.fetch(ctx, groups)
	committed := make(chan committedGroup, 1)
	finished := make(chan struct{})
	// The groups in hand are finished even when shutdown has begun.
	work := context.WithoutCancel(ctx)
	go func() {
		defer close(finished)
		for g := range committed {
			if err := in.finish(work, ctx.Done(), g); err != nil {
				// Nothing of this group was acked: JetStream redelivers it after AckWait.
				in.log.Error("intake claims failed; group will be redelivered", "messages", len(g.ok), "err", err)
			}
		}
	}()
	defer func() { close(committed); <-finished }()
	var lastErr time.Time
	for g := range groups {
		if g.err != nil {
			if time.Since(lastErr) > 10*time.Second {
				in.log.Warn("fetch failed", "err", g.err)
				lastErr = time.Now()
			}
			continue
		}
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
	return nil
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
// acks. ok[i] is the message of rows[i]; a nil msg was already terminated.
type committedGroup struct {
	ok      []accepted
	rows    []ledger.Payout
	toClaim []int // indexes of rows this instance must claim
}

// commit validates msgs, dead-letters the invalid ones and inserts the valid ones in one
// ledger transaction.
func (in *intake) commit(ctx context.Context, msgs []jetstream.Msg) (committedGroup, error) {
	var c committedGroup
	c.ok = make([]accepted, 0, len(msgs))
	c.rows = make([]ledger.Payout, 0, len(msgs))
	for _, m := range msgs {
		req, err := payout.DecodeAndValidate(m.Data(), in.limits)
		if err != nil {
			if err := in.dead.send(ctx, m, "invalid", err.Error()); err != nil {
				return c, err
			}
			continue
		}
		row, err := in.row(m, &req)
		if err != nil {
			return c, err
		}
		c.ok = append(c.ok, accepted{msg: m, req: req})
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
			reason := "out_detail_no was already received with different content"
			if err := in.dead.send(ctx, c.ok[i].msg, "conflict", reason); err != nil {
				return c, err
			}
			c.ok[i].msg = nil // terminated by send
		}
	}
	return c, nil
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
// and are claimed again (found owned) on the next start.
func (in *intake) finish(ctx context.Context, stop <-chan struct{}, c committedGroup) error {
	if len(c.toClaim) > 0 {
		owned, err := in.claim(ctx, c.rows, c.toClaim)
		if err != nil {
			seqs := make([]int64, len(c.toClaim))
			for j, i := range c.toClaim {
				seqs[j] = c.rows[i].Seq
			}
			in.pending.drop(seqs...)
			return err
		}
		if len(owned) > 0 {
			select {
			case in.claimed <- owned:
			case <-stop:
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

// claim takes ownership of rows[idx…] across replicas, records the payouts another instance
// owns as DUPLICATE and returns the ones this instance owns, still RECEIVED in the ledger.
func (in *intake) claim(ctx context.Context, rows []ledger.Payout, idx []int) ([]ledger.Payout, error) {
	keys := make([]string, len(idx))
	for j, i := range idx {
		keys[j] = claims.Key(rows[i].MchID, rows[i].OutDetailNo)
	}
	owners, err := in.claims.Claim(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	var owned []ledger.Payout
	for j, i := range idx {
		if owners[j] == in.claims.Instance() {
			owned = append(owned, rows[i])
			continue
		}
		in.log.Info("duplicate payout owned by another processor", "out_detail_no", rows[i].OutDetailNo, "owner", owners[j])
		if err := in.db.MarkDuplicate(ctx, rows[i].Seq, owners[j]); err != nil {
			return nil, fmt.Errorf("mark duplicate: %w", err)
		}
		in.pending.drop(rows[i].Seq)
	}
	return owned, nil
}

// resume claims every payout committed but not claimed before the last stop (a crash
// between the commit and the claims). It runs before the sealer resumes and before intake
// starts: owned payouts become CLAIMED in the ledger, where the sealer's resume finds them.
func (in *intake) resume(ctx context.Context) error {
	for {
		ps, err := in.db.PayoutsInState(ctx, ledger.PayoutReceived, in.cfg.FetchBatch)
		if err != nil || len(ps) == 0 {
			return err
		}
		idx := make([]int, len(ps))
		for i := range idx {
			idx[i] = i
		}
		// Every row leaves RECEIVED (CLAIMED or DUPLICATE), so the loop ends.
		owned, err := in.claim(ctx, ps, idx)
		if err != nil {
			return err
		}
		seqs := make([]int64, len(owned))
		for i, p := range owned {
			seqs[i] = p.Seq
		}
		if err := in.db.MarkClaimed(ctx, seqs); err != nil {
			return fmt.Errorf("mark claimed: %w", err)
		}
		in.log.Info("resumed unclaimed payouts", "payouts", len(ps))
	}
}

// row turns a validated request into its ledger row. user_name is encrypted here and never
// stored in plaintext; the content hash is keyed so it reveals nothing about the name.
func (in *intake) row(m jetstream.Msg, r *payout.Request) (ledger.Payout, error) {
	md, err := m.Metadata()
	if err != nil {
		return ledger.Payout{}, fmt.Errorf("message metadata: %w", err)
	}
	var cipher string
	if r.UserName != "" {
		if cipher, err = in.encrypt(r.UserName); err != nil {
			return ledger.Payout{}, fmt.Errorf("encrypt user_name of %s: %w", r.OutDetailNo, err)
		}
	}
	return ledger.Payout{
		OutDetailNo:    r.OutDetailNo,
		MchID:          r.MchID,
		AppID:          r.AppID,
		SubMchID:       r.SubMchID,
		OpenID:         r.OpenID,
		Remark:         r.Remark,
		SceneID:        r.SceneID,
		Rail:           r.Rail(),
		GroupKey:       batching.GroupKey(r),
		Amount:         r.Amount,
		UserNameCipher: cipher,
		ContentHash:    in.contentHash(r),
		StreamSeq:      md.Sequence.Stream,
		ReceivedAt:     md.Timestamp,
	}, nil
}

// contentHash is an HMAC over every field that decides what is paid to whom. A re-publish of
// the same key with the same payment is a no-op; anything else is a conflict. Metadata
// (source, created_at) is not part of it.
func (in *intake) contentHash(r *payout.Request) []byte {
	if in.mac == nil {
		in.mac = hmac.New(sha256.New, in.hashKey)
	}
	h := in.mac
	h.Reset()
	for _, f := range []string{
		r.OutDetailNo, r.MchID, r.AppID, r.OpenID, r.Remark, r.UserName, r.SceneID, r.BatchName, r.BatchRemark,
		r.SubMchID, r.SubAppID, r.SpAppID, r.AuthorizationType, r.TransferPurpose, r.TransferScene,
	} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], uint64(r.Amount))
	h.Write(a[:])
	return h.Sum(nil)
}
