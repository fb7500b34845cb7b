package ledger

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Event sources (the events.source column). Source values are also the public Source type.
const (
	srcIntake   = "intake"   // InsertPayouts, MarkClaimed, MarkDuplicate
	srcPipeline = "pipeline" // SealBatch
)

// Event kinds (the events.kind column).
const (
	kindInsert      = "insert"       // payouts seq range inserted; digest = rowsDigest of the range
	kindPayoutState = "payout_state" // payouts in seqs moved from_state → to_state
	kindSeal        = "seal"         // batch sealed with members seqs (body order); digest = SHA-256(body)
	kindBatchState  = "batch_state"  // batch moved from_state → to_state (possibly the same, with new data)
	kindSubmit      = "submit"       // a submit attempt's outcome (no state change unless rejected)
	kindBillCreate  = "bill_create"  // a bill create call's outcome; seqs = the member (no state change)
	kindBill        = "bill"         // WeChat's facts about a bill recorded (transfer_bill_no, create_time, package_info)
	kindCancel      = "cancel"       // a cancel requested, attempted or closed; seqs = the payout (no state change)
	kindRetryNow    = "retry_now"    // an operator made the batch (and its bills not yet created) due now (no state change)
)

// event is one row of the append-only, hash-chained events table.
type event struct {
	ID         int64
	At         int64
	Source     string
	Kind       string
	OutBatchNo string
	Seqs       string // encodeSeqs form
	From, To   string
	Data       string
	Digest     []byte
	PrevHash   []byte
	Hash       []byte
}

// chainHash is SHA-256(prev ‖ canonical(row)): every field length-prefixed, integers decimal.
func (e *event) chainHash(prev []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var lb [binary.MaxVarintLen64]byte
	for _, f := range [][]byte{
		[]byte(strconv.FormatInt(e.ID, 10)), []byte(strconv.FormatInt(e.At, 10)),
		[]byte(e.Source), []byte(e.Kind), []byte(e.OutBatchNo), []byte(e.Seqs),
		[]byte(e.From), []byte(e.To), []byte(e.Data), e.Digest,
	} {
		h.Write(lb[:binary.PutUvarint(lb[:], uint64(len(f)))])
		h.Write(f)
	}
	return h.Sum(nil)
}

// appendEvent assigns the next id, chains e onto db.head and inserts it. Must run inside
// db.write (db.head and db.lastEvent are guarded by the write semaphore and restored on
// rollback).
func (db *DB) appendEvent(ctx context.Context, tx *sql.Conn, e event) error {
	e.ID = db.lastEvent + 1
	if e.At == 0 {
		e.At = ms(db.now())
	}
	if e.Digest == nil {
		e.Digest = []byte{}
	}
	e.PrevHash = db.head
	e.Hash = e.chainHash(e.PrevHash)
	_, err := tx.ExecContext(ctx, `INSERT INTO events (id, at, source, kind, out_batch_no, seqs, from_state, to_state, data, digest, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.At, e.Source, e.Kind, e.OutBatchNo, e.Seqs, e.From, e.To, e.Data, e.Digest, e.PrevHash, e.Hash)
	if err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	db.head, db.lastEvent = e.Hash, e.ID
	return nil
}

// encodeSeqs writes seqs (in the given order) as comma-separated runs: "1-4,9,12-13".
// Runs are ascending only, so order is preserved exactly.
func encodeSeqs(seqs []int64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(seqs[i], 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatInt(seqs[j], 10))
		}
		i = j + 1
	}
	return b.String()
}

// maxSeqs bounds what decodeSeqs expands (an event never names more than a group or a batch),
// so a tampered events row cannot exhaust Audit's memory.
const maxSeqs = 1 << 20

// decodeSeqs is the inverse of encodeSeqs.
func decodeSeqs(s string) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	var out []int64
	for _, run := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(run, "-")
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seqs %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil {
				return nil, fmt.Errorf("seqs %q: %w", s, err)
			}
		}
		if b < a || int64(len(out))+(b-a) >= maxSeqs {
			return nil, fmt.Errorf("seqs %q: bad run %q", s, run)
		}
		for i := int64(0); i <= b-a; i++ { // counted: a+i never overflows as b ≤ MaxInt64
			out = append(out, a+i)
		}
	}
	return out, nil
}
