package pipeline

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
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
// with their reason and terminated. The next fetch overlaps the commit of the current group.
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
}

type fetched struct {
	msgs []jetstream.Msg
	err  error
}

func (in *intake) run(ctx context.Context) error {
	groups := make(chan fetched, 1)
	go func() {
		defer close(groups)
		for ctx.Err() == nil {
			b, err := in.cons.Fetch(in.cfg.FetchBatch, jetstream.FetchMaxWait(in.cfg.FetchMaxWait))
			if err != nil {
				if ctx.Err() == nil {
					groups <- fetched{err: err}
				}
				continue
			}
			var msgs []jetstream.Msg
			for m := range b.Messages() {
				msgs = append(msgs, m)
			}
			if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && len(msgs) == 0 && ctx.Err() == nil {
				groups <- fetched{err: err}
				continue
			}
			if len(msgs) > 0 {
				groups <- fetched{msgs: msgs}
			}
		}
	}()
	var lastErr time.Time
	for g := range groups {
		if g.err != nil {
			if time.Since(lastErr) > 10*time.Second {
				in.log.Warn("fetch failed", "err", g.err)
				lastErr = time.Now()
			}
			continue
		}
		// The group in hand is finished even when shutdown has begun.
		if err := in.handle(context.WithoutCancel(ctx), g.msgs); err != nil {
			// Nothing of this group was acked: JetStream redelivers it after AckWait.
			in.log.Error("intake group failed; will be redelivered", "messages", len(g.msgs), "err", err)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
	return nil
}

type accepted struct {
	msg jetstream.Msg
	req payout.Request
}

func (in *intake) handle(ctx context.Context, msgs []jetstream.Msg) error {
	var ok []accepted
	rows := make([]ledger.Payout, 0, len(msgs))
	for _, m := range msgs {
		req, err := payout.Decode(m.Data())
		if err == nil {
			err = req.Validate(in.limits)
		}
		if err != nil {
			if err := in.dead.send(ctx, m, "invalid", err.Error()); err != nil {
				return err
			}
			continue
		}
		row, err := in.row(m, &req)
		if err != nil {
			return err
		}
		ok = append(ok, accepted{msg: m, req: req})
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil
	}
	results, err := in.db.InsertPayouts(ctx, rows)
	if err != nil {
		return fmt.Errorf("ledger insert: %w", err)
	}
	// Claim every payout this instance has committed but not yet claimed. A key seen twice
	// in one group maps to one row.
	var toClaim []int
	seen := map[int64]bool{}
	for i, r := range results {
		switch {
		case r.Status == ledger.Conflict:
			reason := "out_detail_no was already received with different content"
			if err := in.dead.send(ctx, ok[i].msg, "conflict", reason); err != nil {
				return err
			}
			ok[i].msg = nil // terminated by send
		case r.State == ledger.PayoutReceived && !seen[r.Seq]:
			seen[r.Seq] = true
			rows[i].Seq = r.Seq
			toClaim = append(toClaim, i)
		}
	}
	if len(toClaim) > 0 {
		if err := in.claim(ctx, rows, toClaim); err != nil {
			return err
		}
	}
	for _, a := range ok {
		if a.msg != nil {
			if err := a.msg.Ack(); err != nil {
				// A lost ack means a redelivery, which the ledger and the claims absorb.
				in.log.Warn("ack failed", "err", err)
			}
		}
	}
	return nil
}

// claim takes ownership of rows[idx…] across replicas, records the outcome in the ledger
// and hands the owned payouts to the sealer.
func (in *intake) claim(ctx context.Context, rows []ledger.Payout, idx []int) error {
	keys := make([]string, len(idx))
	for j, i := range idx {
		keys[j] = claims.Key(rows[i].MchID, rows[i].OutDetailNo)
	}
	owners, err := in.claims.Claim(ctx, keys)
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	var mine []int64
	var owned []ledger.Payout
	for j, i := range idx {
		if owners[j] == in.claims.Instance() {
			mine = append(mine, rows[i].Seq)
			rows[i].State = ledger.PayoutClaimed
			owned = append(owned, rows[i])
			continue
		}
		in.log.Info("duplicate payout owned by another processor", "out_detail_no", rows[i].OutDetailNo, "owner", owners[j])
		if err := in.db.MarkDuplicate(ctx, rows[i].Seq, owners[j]); err != nil {
			return fmt.Errorf("mark duplicate: %w", err)
		}
	}
	if len(mine) > 0 {
		if err := in.db.MarkClaimed(ctx, mine); err != nil {
			return fmt.Errorf("mark claimed: %w", err)
		}
		select {
		case in.claimed <- owned:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
		ContentHash:    contentHash(in.hashKey, r),
		StreamSeq:      md.Sequence.Stream,
		ReceivedAt:     md.Timestamp,
	}, nil
}

// contentHash is an HMAC over every field that decides what is paid to whom. A re-publish of
// the same key with the same payment is a no-op; anything else is a conflict. Metadata
// (source, created_at) is not part of it.
func contentHash(key []byte, r *payout.Request) []byte {
	h := hmac.New(sha256.New, key)
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
