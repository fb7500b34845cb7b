package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/backoff"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/journal"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// AdoptSource is what is left of a lost instance outside its ledger: the claims it holds,
// the batches it journaled before sending them, and the request stream its payouts came from.
type AdoptSource struct {
	Instance string          // the lost instance, already retired (instances.Retire)
	Held     []claims.Held   // claims.OwnedBy the instance
	Journal  []journal.Entry // journal.Batches of the instance
	Requests jetstream.Stream
	// Journaled and JournalSince are what the instance's heartbeat promised (instances.Info):
	// a payout received before JournalSince, or from an instance that never promised, that is
	// in no journaled batch may still have been sent.
	Journaled    bool
	JournalSince time.Time
	// Results is the results stream: the outcomes the instance already published are
	// promises kept here (a bill it reported CANCELLED is never sent); nil: none read.
	Results jetstream.Stream
}

// Adoption is what adopting a lost instance found, and (unless planned only) recorded.
type Adoption struct {
	Instance  string
	Held      int      // claims the instance held
	Batches   []string // its journaled batches, resumed here under their own numbers and bodies
	InBatches int      // payouts in those batches
	ToPay     int      // payouts it held but never sent: recorded here to be paid
	Reclaimed int      // of those, rows this ledger had recorded DUPLICATE of the lost instance
	Left      []Left   // claims left with the lost instance: never paid here
	// BatchOf maps each key in a resumed batch to that batch's out_batch_no.
	BatchOf map[string]string
	// Transfer are the claims to move to this instance once the payouts are recorded
	// (claims.Transfer), in key order.
	Transfer []claims.Held
}

// Left is a claim adoption leaves alone, and why: it is reported, never paid.
type Left struct {
	Key, Reason string
}

// adoptMargin: a journaled batch older than the query horizon minus this is not resumed
// (WeChat may no longer answer for its number).
const adoptMargin = 24 * time.Hour

// Adopt takes over, into this pipeline's ledger, the payouts a lost instance held
// (docs/replication.md#adoption). Every journaled batch of it (sealed, maybe sent) is
// recorded here under its own number with its own bodies, its payouts' rows rebuilt from
// their requests in the stream, and marked maybe sent: the driver replays the same body, and
// WeChat answers a number it already holds with that batch, so nothing is paid twice. Every
// other payout it held was never sent (the driver journals a batch before its first send), so
// it is recorded RECEIVED (a DUPLICATE of it recorded here is reclaimed) and paid here under
// a new number. A held key whose request is gone from the stream, or whose journaled batch
// cannot be rebuilt, is Left, never paid. A journaled batch whose body cannot be read stops the
// adoption: its members could not be told from payouts never sent.
//
// With plan set nothing is written: the Adoption says what would be done. Otherwise the
// ledger is marked (ledger.DB.BeginAdoption) before the first write; the caller moves the
// Transfer claims and then ends the adoption. Adopt can be run again after a failure: what
// is recorded already is found and kept.
func (p *Pipeline) Adopt(ctx context.Context, src AdoptSource, plan bool) (Adoption, error) {
	in := p.intake
	a := Adoption{Instance: src.Instance, Held: len(src.Held)}
	held := make(map[string]claims.Held, len(src.Held))
	for _, h := range src.Held {
		held[h.Key] = h
	}
	rows, refused, err := in.requestsOf(ctx, src.Requests, held)
	if err != nil {
		return a, err
	}
	told, err := p.outcomes.told(ctx, src.Results, held)
	if err != nil {
		return a, err
	}
	left := map[string]string{}
	a.BatchOf = map[string]string{}
	var resume []journal.Entry
	for _, e := range src.Journal {
		details, err := ledger.BodyDetails(e.Body)
		if err != nil {
			// Its members are unknown, so none of the held keys can be called never sent.
			return a, fmt.Errorf("journaled batch %s is unreadable, nothing adopted: %w", e.OutBatchNo, err)
		}
		why := resumable(e, details, rows, held, a.BatchOf)
		if _, err := p.intake.db.BatchHead(ctx, e.OutBatchNo); err == nil {
			why = "" // recorded here by an earlier run, whose claims may be moved already
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return a, err
		}
		if why != "" {
			for _, d := range details {
				left[claims.Key(e.MchID, d.OutDetailNo)] = fmt.Sprintf("in journaled batch %s, which cannot be resumed: %s", e.OutBatchNo, why)
			}
			continue
		}
		resume = append(resume, e)
		for _, d := range details {
			a.BatchOf[claims.Key(e.MchID, d.OutDetailNo)] = e.OutBatchNo
		}
	}
	var take []ledger.Payout // rows to record, in key order
	for _, h := range src.Held {
		row, ok := rows[h.Key]
		switch {
		case left[h.Key] != "":
		case !ok && refused[h.Key] != "":
			left[h.Key] = "its request is refused now: " + refused[h.Key]
		case !ok:
			left[h.Key] = "its request is no longer in the stream"
		case a.BatchOf[h.Key] == "" && (!src.Journaled || row.ReceivedAt.Before(src.JournalSince)) && !p.holds(ctx, row.OutDetailNo):
			left[h.Key] = "received before the instance journaled its batches: it may have been sent; check it at WeChat and settle it by hand"
		default:
			take = append(take, row)
			if a.BatchOf[h.Key] == "" {
				a.ToPay++
			}
		}
	}
	for _, e := range resume {
		a.Batches = append(a.Batches, e.OutBatchNo)
		a.InBatches += e.TotalNum
	}
	for _, h := range src.Held {
		if why := left[h.Key]; why != "" {
			a.Left = append(a.Left, Left{Key: h.Key, Reason: why})
		} else {
			a.Transfer = append(a.Transfer, h)
		}
	}
	if plan {
		return a, nil
	}
	if err := p.record(ctx, &a, take, resume, told); err != nil {
		return a, err
	}
	return a, nil
}

// resumable says why journaled batch e, whose body lists details, cannot be resumed here (""
// if it can): each of its members must be held by the lost instance, in no other batch, with
// its request found and matching the body.
func resumable(e journal.Entry, details []ledger.BodyDetail, rows map[string]ledger.Payout, held map[string]claims.Held, batchOf map[string]string) string {
	if time.Since(e.SealedAt) > ledger.QueryHorizon-adoptMargin {
		return fmt.Sprintf("sealed at %s, too close to WeChat's 30-day query window", e.SealedAt.Format(time.RFC3339))
	}
	if len(details) != e.TotalNum {
		return fmt.Sprintf("%d details for total_num %d", len(details), e.TotalNum)
	}
	for _, d := range details {
		k := claims.Key(e.MchID, d.OutDetailNo)
		row, ok := rows[k]
		switch {
		case held[k].Key == "":
			return "member " + d.OutDetailNo + " is not held by the instance"
		case batchOf[k] != "":
			return "member " + d.OutDetailNo + " is also in journaled batch " + batchOf[k]
		case !ok:
			return "the request of member " + d.OutDetailNo + " is not in the stream"
		case row.Amount != d.Amount || row.Rail != e.Rail:
			return fmt.Sprintf("member %s is %d fen on rail %s; its request says %d fen on rail %s", d.OutDetailNo, d.Amount, e.Rail, row.Amount, row.Rail)
		}
	}
	return ""
}

// requestsOf reads the request stream from its start to its last message and returns, for
// each held key, its request's ledger row (checked as intake checks it, with the content the
// claim holds), and for the keys whose only requests are refused now, why.
func (in *intake) requestsOf(ctx context.Context, stream jetstream.Stream, held map[string]claims.Held) (map[string]ledger.Payout, map[string]string, error) {
	rows, refused := map[string]ledger.Payout{}, map[string]string{}
	if len(held) == 0 {
		return rows, refused, nil
	}
	err := readStream(ctx, stream, nil, func(m jetstream.Msg, md *jetstream.MsgMetadata) {
		in.adoptRequest(m, md, held, rows, refused)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read request stream: %w", err)
	}
	return rows, refused, nil
}

// adoptRequest takes one message of the stream into rows when it is the request of a held
// key, valid for this processor, with the claim's content.
func (in *intake) adoptRequest(m jetstream.Msg, md *jetstream.MsgMetadata, held map[string]claims.Held, rows map[string]ledger.Payout, refused map[string]string) {
	req, err := payout.Decode(m.Data())
	if err != nil {
		return // never claimed by anyone: intake dead-letters it
	}
	key := claims.Key(req.MchID, req.OutDetailNo)
	h, ok := held[key]
	if !ok {
		return
	}
	if _, done := rows[key]; done {
		return
	}
	rail := in.railOf(&req)
	if err := req.ValidateFor(rail, in.limits); err != nil {
		refused[key] = err.Error()
		return
	}
	if reason := in.merchant.refuse(in.prefix, m.Subject(), &req); reason != "" {
		refused[key] = reason
		return
	}
	if req.UserNameCipher != "" && req.WechatpaySerial != in.serial {
		refused[key] = fmt.Sprintf("user_name_cipher was made with WeChat Pay key %s; this processor sends with %s", req.WechatpaySerial, in.serial)
		return
	}
	row, err := in.row(md, rail, &req)
	if err != nil {
		refused[key] = err.Error()
		return
	}
	if h.Owner.Conflicts(row.ContentHash) {
		return // a re-publish with other content: not what the instance claimed
	}
	rows[key] = row
	delete(refused, key)
}

// record writes the adoption into the ledger: the mark, the rows (reclaiming DUPLICATE ones
// of the lost instance), and each resumed batch sealed and marked maybe sent.
func (p *Pipeline) record(ctx context.Context, a *Adoption, take []ledger.Payout, resume []journal.Entry, told map[string]string) error {
	db := p.intake.db
	if err := db.BeginAdoption(ctx, a.Instance); err != nil {
		return err
	}
	seqs := make(map[string]int64, len(take)) // by out_detail_no
	var reclaim []int64
	for part := range slices.Chunk(take, ledger.MaxGroup) {
		results, err := db.InsertPayouts(ctx, part)
		if err != nil {
			return fmt.Errorf("record adopted payouts: %w", err)
		}
		for i, r := range results {
			switch {
			case r.Status == ledger.Conflict:
				return fmt.Errorf("adopted payout %s: this ledger holds it with other content", part[i].OutDetailNo)
			case r.State == ledger.PayoutDuplicate:
				reclaim = append(reclaim, r.Seq)
			}
			seqs[part[i].OutDetailNo] = r.Seq
		}
	}
	if len(reclaim) > 0 {
		if err := db.Reclaim(ctx, reclaim, a.Instance); err != nil {
			return err
		}
		a.Reclaimed = len(reclaim)
	}
	// A bill the instance reported CANCELLED was cancelled before it was ever sent: its
	// cancel is recorded before sealing, so its bill is cancelled here without WeChat too.
	for _, r := range take {
		if told[claims.Key(r.MchID, r.OutDetailNo)] != ledger.PayoutCancelled {
			continue
		}
		if _, err := db.RequestCancel(ctx, r.OutDetailNo, "cancelled by instance "+a.Instance+" before it was lost"); err != nil && !errors.Is(err, ledger.ErrFinal) {
			return fmt.Errorf("adopted cancel of %s: %w", r.OutDetailNo, err)
		}
	}
	for _, e := range resume {
		if err := p.resumeBatch(ctx, e, seqs, told); err != nil {
			return err
		}
	}
	return nil
}

// codeAdopted marks a resumed batch's (or bill's) attempt: it may have been sent by the
// lost instance, so a refusal of its replay proves nothing (createAnswer's first is false).
const codeAdopted = "ADOPTED"

// resumeBatch seals journaled batch e with its members' rows here and records one attempt of
// unknown outcome, unless an earlier run did. A create the instance reported REJECTED (its
// very first attempt was refused: nothing exists under the number) or a bill it reported
// CANCELLED (never sent) gets no such attempt: its replay is a first attempt again, or the
// bill is cancelled here without WeChat.
func (p *Pipeline) resumeBatch(ctx context.Context, e journal.Entry, seqs map[string]int64, told map[string]string) error {
	db := p.intake.db
	details, err := ledger.BodyDetails(e.Body)
	if err != nil {
		return fmt.Errorf("resume batch %s: %w", e.OutBatchNo, err)
	}
	b := ledger.Batch{OutBatchNo: e.OutBatchNo, Rail: e.Rail, GroupKey: e.GroupKey, MchID: e.MchID,
		TotalAmount: e.TotalAmount, TotalNum: e.TotalNum, Body: e.Body, Bills: e.Bills, Members: make([]int64, len(details))}
	for i, d := range details {
		b.Members[i] = seqs[d.OutDetailNo]
	}
	cur, err := db.BatchHead(ctx, e.OutBatchNo)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		if err := db.ClaimAndSeal(ctx, b); err != nil {
			return fmt.Errorf("resume batch: %w", err)
		}
	case err != nil:
		return err
	case cur.Attempts > 0 || cur.State != ledger.BatchSealed:
		return nil // recorded by an earlier run
	}
	neverSent := func(d ledger.BodyDetail) bool {
		st := told[claims.Key(e.MchID, d.OutDetailNo)]
		return st == ledger.PayoutRejected || st == ledger.PayoutCancelled
	}
	if e.Rail != payout.RailBills {
		if slices.ContainsFunc(details, neverSent) {
			return nil
		}
		return db.RecordSubmit(ctx, e.OutBatchNo, ledger.SubmitResult{Outcome: ledger.SubmitRetry, ErrorCode: codeAdopted})
	}
	for _, d := range details {
		if neverSent(d) {
			continue
		}
		if err := db.RecordBillCreate(ctx, d.OutDetailNo, ledger.BillCreate{Outcome: ledger.SubmitRetry, ErrorCode: codeAdopted}); err != nil {
			return err
		}
	}
	return nil
}

// told returns the final outcomes already published for the held keys that adoption must
// honour: CANCELLED and REJECTED (nothing was sent, or nothing exists at WeChat), by key.
// It reads the results stream from its start to its last message; nil stream: none.
func (o *outcomes) told(ctx context.Context, results jetstream.Stream, held map[string]claims.Held) (map[string]string, error) {
	out := map[string]string{}
	if results == nil || len(held) == 0 {
		return out, nil
	}
	subjects := []string{payout.ResultSubject(o.prefix, ledger.PayoutCancelled), payout.ResultSubject(o.prefix, ledger.PayoutRejected)}
	err := readStream(ctx, results, subjects, func(m jetstream.Msg, _ *jetstream.MsgMetadata) {
		var ev payout.OutcomeEvent
		if json.Unmarshal(m.Data(), &ev) != nil {
			return
		}
		if k := claims.Key(ev.MchID, ev.OutDetailNo); held[k].Key != "" && (ev.State == ledger.PayoutCancelled || ev.State == ledger.PayoutRejected) {
			out[k] = ev.State
		}
	})
	if err != nil {
		return nil, fmt.Errorf("results stream: %w", err)
	}
	return out, nil
}

// readStream calls fn with every message of stream on subjects (every subject when none)
// that was stored when it began, in order. The end is decided against the stream's leader,
// never by an empty fetch or a consumer's count, which can end the read short with no error:
//   - an ordered consumer counts a batch the server sent as delivered even when the connection
//     lost it on the way;
//   - on a cluster the consumer may run on a replica behind the leader, and counts what its
//     copy holds (docs/replication.md#reading-the-kv-buckets).
//
// The read ends at the stream's last sequence at the start (the leader's stream info). When
// a fetch brings nothing, or the consumer says nothing is pending behind a message, the stream
// is asked (a message get, which its leader answers) whether a message on subjects is left
// between the last one read and that sequence; the next fetch resumes after the last one
// read, so a lost batch comes again.
//
// A batch can also lose its middle: the connection drops while the server sends it, the
// client reconnects and subscribes again before the server has sent the rest, and the rest
// arrives. The ordered consumer does not notice (its next fetch starts after the last message
// that arrived), so a read that trusted it skipped the lost ones with no error (645 of 2500
// beside a loaded machine). Each fetch makes a new server consumer, whose deliveries count
// 1, 2, 3…: at the first that does not follow, the rest of the batch is left unread and the
// read starts again, on a new ordered consumer, after the last message read.
//
// A read that goes maxReadStalls fetches in a row without a message (every batch losing its
// first delivery, or a consumer that never catches up) ends with errReadStalled, not a loop.
func readStream(ctx context.Context, stream jetstream.Stream, subjects []string, fn func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	// open makes an ordered consumer of the messages on subjects stored after sequence after.
	open := func(after uint64) (jetstream.Consumer, error) {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
		if after > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
		}
		return stream.OrderedConsumer(ctx, cfg)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := open(0)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("ordered consumer info: %w", err)
	}
	// pending sizes the fetches only (a fetch asking for more than the server has waits out
	// its max wait); it is what the consumer last said was pending, whatever became of it.
	pending := ci.NumPending
	if pending == 0 {
		// None on subjects in the consumer's copy of the stream.
		if left, err := storedOn(ctx, stream, subjects, 1, last); err != nil || !left {
			return err
		}
	}
	var read uint64 // the stream sequence of the last message read
	stalls := 0     // fetches in a row that read nothing
	for {
		b, err := cons.Fetch(int(min(max(pending, 1), 1000)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("fetch after stream sequence %d: %w", read, err)
		}
		n, done, gap := 0, false, false
		for m := range b.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if done || gap {
				continue // the batch is drained, not read
			}
			if md.Sequence.Consumer != uint64(n)+1 {
				gap = true // deliveries lost on the way: read again after the last one read
				continue
			}
			if md.Sequence.Stream > last {
				done = true // stored after the read began
				continue
			}
			fn(m, md)
			read, n, pending = md.Sequence.Stream, n+1, md.NumPending
			done = read == last
		}
		err = b.Error()
		unanswered := errors.Is(err, nats.ErrNoResponders)
		if err != nil && !unanswered && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch after stream sequence %d: %w", read, err)
		}
		if done {
			return nil
		}
		if n > 0 {
			stalls = 0
		} else if stalls++; stalls == maxReadStalls {
			return fmt.Errorf("%w: %d fetches in a row read nothing after stream sequence %d (the read ends at %d)", errReadStalled, stalls, read, last)
		}
		if unanswered {
			// No consumer answered the pull. Each fetch of an ordered consumer makes a new
			// consumer on the server, and on a cluster the pull can reach the node this
			// client is on before that node knows where the new consumer runs: under the
			// soak's load most runs of `processor adopt` met it at some fetch of the request
			// stream. Nothing was delivered: after a short wait, read again after the last
			// message read, on a new consumer.
			sleepCtx(ctx, backoff.Jittered(100*time.Millisecond, 2*time.Second, stalls))
			if err := ctx.Err(); err != nil {
				return err
			}
			gap = true
		}
		if gap {
			if cons, err = open(read); err != nil {
				return fmt.Errorf("ordered consumer after stream sequence %d: %w", read, err)
			}
			continue
		}
		if n == 0 || pending == 0 {
			left, err := storedOn(ctx, stream, subjects, read+1, last)
			if err != nil || !left {
				return err
			}
		}
	}
}

// maxReadStalls is how many fetches in a row may read nothing before readStream gives up:
// 30 fetches that each wait up to two seconds, or 30 consumers whose first delivery was lost.
const maxReadStalls = 30

// errReadStalled: a stream read made no progress (readStream). Nothing is taken over; the
// adoption can be run again.
var errReadStalled = errors.New("stream read made no progress")

// storedOn reports whether stream holds a message on subjects (any subject when none) with
// a sequence from from to last. The streams are made without direct gets (broker.Ensure), so
// the message get is answered by the stream's leader.
func storedOn(ctx context.Context, stream jetstream.Stream, subjects []string, from, last uint64) (bool, error) {
	if len(subjects) == 0 {
		subjects = []string{">"}
	}
	for _, subject := range subjects {
		m, err := stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("look for messages left on %s: %w", subject, err)
		}
		if m.Sequence <= last {
			return true, nil
		}
	}
	return false, nil
}

// holds reports whether this pipeline's ledger already owns key (a restored copy completed
// from NATS knows it): a row that is not a DUPLICATE (a redelivery recorded as another's).
func (p *Pipeline) holds(ctx context.Context, key string) bool {
	r, err := p.intake.db.Payout(ctx, key)
	return err == nil && r.State != ledger.PayoutDuplicate
}
