package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Payout is one payout request as stored. Seq is assigned by InsertPayouts (ordered). The
// caller computes ContentHash (a keyed hash of the request content): equal hashes mean the
// same request. UserNameCipher is the OAEP ciphertext (base64) or "", never plaintext.
// BillInfo (rail bills only) is the request's user_recv_perception and
// transfer_scene_report_infos as the caller encodes them (JSON), stored as given.
type Payout struct {
	Seq                                                                          int64
	OutDetailNo, MchID, AppID, SubMchID, OpenID, Remark, SceneID, Rail, GroupKey string
	Amount                                                                       int64
	UserNameCipher                                                               string
	ContentHash                                                                  []byte
	StreamSeq                                                                    uint64
	State, OutBatchNo, DetailID, FailReason                                      string
	ReceivedAt, UpdatedAt                                                        time.Time
	BillInfo                                                                     []byte
}

// LogValue redacts the openid and the name cipher.
func (p Payout) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("seq", p.Seq), slog.String("out_detail_no", p.OutDetailNo),
		slog.String("mchid", p.MchID), slog.Int64("amount", p.Amount), slog.String("state", p.State))
}

// InsertStatus says what InsertPayouts did with one request.
type InsertStatus int

// Insert statuses.
const (
	Inserted InsertStatus = iota // new key: stored in state RECEIVED
	Existing                     // same key, same ContentHash: nothing written
	Conflict                     // same key, other content: recorded in conflicts, nothing overwritten
)

// String returns the status name.
func (s InsertStatus) String() string {
	switch s {
	case Inserted:
		return "inserted"
	case Existing:
		return "existing"
	case Conflict:
		return "conflict"
	}
	return "InsertStatus(" + strconv.Itoa(int(s)) + ")"
}

// InsertResult is the outcome for one request of InsertPayouts. Seq and State are those of
// the stored row (the new one, or the one that already held the key).
type InsertResult struct {
	Status InsertStatus
	Seq    int64
	State  string
}

// minCipherLen is the shortest plausible base64 RSA-OAEP ciphertext (a 1024-bit key);
// anything shorter is refused as a possible plaintext name (docs/money-rules.md#secrets).
const minCipherLen = 128

// validate checks the fields the schema and the rules of money require.
func (p *Payout) validate() error {
	switch {
	case !validKey(p.OutDetailNo):
		return fmt.Errorf("out_detail_no %q: want 1-32 of [0-9A-Za-z]", p.OutDetailNo)
	case p.Amount <= 0:
		return fmt.Errorf("out_detail_no %s: amount %d fen: want > 0", p.OutDetailNo, p.Amount)
	case p.MchID == "":
		return fmt.Errorf("out_detail_no %s: empty mchid", p.OutDetailNo)
	case railCap(p.Rail) == 0:
		return fmt.Errorf("out_detail_no %s: rail %q: want direct, partner or bills", p.OutDetailNo, p.Rail)
	case len(p.BillInfo) > 0 && p.Rail != RailBills:
		return fmt.Errorf("out_detail_no %s: bill_info on rail %s: transfer bills only", p.OutDetailNo, p.Rail)
	case len(p.ContentHash) == 0:
		return fmt.Errorf("out_detail_no %s: empty content hash", p.OutDetailNo)
	case p.StreamSeq > 1<<63-1:
		return fmt.Errorf("out_detail_no %s: stream seq %d out of range", p.OutDetailNo, p.StreamSeq)
	}
	if p.UserNameCipher != "" {
		b, err := base64.StdEncoding.DecodeString(p.UserNameCipher)
		if err != nil || len(b) < minCipherLen {
			return fmt.Errorf("out_detail_no %s: user_name_cipher is not an OAEP ciphertext", p.OutDetailNo)
		}
	}
	return nil
}

// validKey reports whether s is a valid out_detail_no / out_batch_no (docs/wechatpay.md §4).
func validKey(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// rowDigestLen is the length of one row's digest in an insert event.
const rowDigestLen = 8

// rowDigests returns, for each of ps in order, the first rowDigestLen bytes of SHA-256 over
// the canonical encoding of its immutable request fields (each field as a uvarint length and
// its bytes: seq, out_detail_no, mchid, appid, sub_mchid, openid, remark, scene_id, rail,
// group_key, amount, user_name_cipher, content_hash, stream_seq, then bill_info if any; the
// integers in decimal). The insert event stores them (so the chain covers every row's
// content); Audit recomputes them and names any edited row. One buffer holds each row's
// encoding in turn, hashed in one call.
func rowDigests(ps []Payout) []byte {
	out := make([]byte, 0, len(ps)*rowDigestLen)
	var buf []byte
	put := func(b []byte) { buf = append(binary.AppendUvarint(buf, uint64(len(b))), b...) }
	putString := func(s string) { buf = append(binary.AppendUvarint(buf, uint64(len(s))), s...) }
	var num [20]byte
	for i := range ps {
		p := &ps[i]
		buf = buf[:0]
		put(strconv.AppendInt(num[:0], p.Seq, 10))
		for _, s := range [...]string{p.OutDetailNo, p.MchID, p.AppID, p.SubMchID, p.OpenID, p.Remark, p.SceneID, p.Rail, p.GroupKey} {
			putString(s)
		}
		put(strconv.AppendInt(num[:0], p.Amount, 10))
		putString(p.UserNameCipher)
		put(p.ContentHash)
		put(strconv.AppendUint(num[:0], p.StreamSeq, 10))
		if len(p.BillInfo) > 0 { // absent before 0004: digests of older rows are unchanged
			put(p.BillInfo)
		}
		sum := sha256.Sum256(buf)
		out = append(out, sum[:rowDigestLen]...)
	}
	return out
}

// MaxGroup is the most requests one InsertPayouts call takes (intake fetches 100–3000).
const MaxGroup = 100_000

// storedKey is what InsertPayouts needs to know about a stored key.
type storedKey struct {
	seq         int64
	contentHash []byte
	state       string
}

const insertChunk = 500 // rows per multi-row INSERT (17 parameters a row, 18 with bill_info)

// InsertPayouts records a group of requests in ONE transaction and returns one result per
// request, in input order. A request whose key is stored with the same ContentHash is
// Existing (no-op); with another ContentHash it is a Conflict, recorded in the conflicts
// table without touching the stored row. Duplicates inside ps are handled the same way
// against the earlier one. New rows get ordered seqs and state RECEIVED, and one insert
// event covering the whole group is appended. ReceivedAt and UpdatedAt are the ledger's
// clock; the input's are ignored. An invalid request fails the whole call with
// ErrInvalid and nothing is written.
func (db *DB) InsertPayouts(ctx context.Context, ps []Payout) ([]InsertResult, error) {
	for i := range ps {
		if err := ps[i].validate(); err != nil {
			return nil, fmt.Errorf("insert payouts: request %d: %w: %w", i, ErrInvalid, err)
		}
	}
	if len(ps) > MaxGroup {
		return nil, fmt.Errorf("insert payouts: %w: %d requests in one group, max %d", ErrInvalid, len(ps), MaxGroup)
	}
	if len(ps) == 0 {
		return nil, nil
	}
	var res []InsertResult
	err := db.write(ctx, func(tx *sql.Conn) error {
		var err error
		res, err = db.insertPayouts(ctx, tx, ps)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("insert payouts: %w", err)
	}
	return res, nil
}

func (db *DB) insertPayouts(ctx context.Context, tx *sql.Conn, ps []Payout) ([]InsertResult, error) {
	keys := make([]string, len(ps))
	for i := range ps {
		keys[i] = ps[i].OutDetailNo
	}
	stored, err := db.lookupKeys(ctx, tx, keys)
	if err != nil {
		return nil, err
	}
	var next int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) + 1 FROM payouts`).Scan(&next); err != nil {
		return nil, err
	}
	now := ms(db.now())
	res := make([]InsertResult, len(ps))
	fresh := make([]Payout, 0, len(ps))
	var conflicts []int // indexes into ps, recorded once the group's new rows exist
	for i := range ps {
		p := ps[i]
		if k, ok := stored[p.OutDetailNo]; ok {
			res[i] = InsertResult{Status: Existing, Seq: k.seq, State: k.state}
			if !bytes.Equal(k.contentHash, p.ContentHash) {
				res[i].Status = Conflict
				conflicts = append(conflicts, i)
			}
			continue
		}
		p.Seq, p.State = next, PayoutReceived
		next++
		stored[p.OutDetailNo] = storedKey{seq: p.Seq, contentHash: p.ContentHash, state: PayoutReceived}
		res[i] = InsertResult{Status: Inserted, Seq: p.Seq, State: PayoutReceived}
		fresh = append(fresh, p)
	}
	if err := db.insertFresh(ctx, tx, fresh, now); err != nil {
		return nil, err
	}
	for _, i := range conflicts {
		p := &ps[i]
		if _, err := tx.ExecContext(ctx, `INSERT INTO conflicts (seq, out_detail_no, content_hash, stream_seq, at) VALUES (?, ?, ?, ?, ?)`,
			res[i].Seq, p.OutDetailNo, p.ContentHash, int64(p.StreamSeq), now); err != nil {
			return nil, fmt.Errorf("record conflict %s: %w", p.OutDetailNo, err)
		}
		db.log.WarnContext(ctx, "ledger: same out_detail_no with other content; kept the stored request",
			slog.String("out_detail_no", p.OutDetailNo), slog.Int64("seq", res[i].Seq), slog.Uint64("stream_seq", p.StreamSeq))
	}
	return res, nil
}

// totalsSchema is the first migration with payout_totals (0005). Tests still write under
// older schemas.
const totalsSchema = 5

// totalDelta changes the payout_totals row of state by count payouts of amount fen.
type totalDelta struct {
	state  string
	count  int
	amount int64
}

// addTotals applies ds to payout_totals in one statement. Every change of the payouts'
// states or number goes through it (insertFresh, seal, movePayouts; see 0005).
func (db *DB) addTotals(ctx context.Context, tx *sql.Conn, ds ...totalDelta) error {
	if db.upTo < totalsSchema {
		return nil
	}
	args := make([]any, 0, 3*len(ds))
	for _, d := range ds {
		args = append(args, d.state, d.count, d.amount)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO payout_totals (state, count, amount) VALUES `+
		strings.TrimSuffix(strings.Repeat("(?, ?, ?),", len(ds)), ",")+`
		ON CONFLICT (state) DO UPDATE SET count = count + excluded.count, amount = amount + excluded.amount`, args...)
	if err != nil {
		return fmt.Errorf("payout totals: %w", err)
	}
	return nil
}

// insertFresh writes new rows (seqs assigned, ascending and contiguous) in state RECEIVED,
// counts them in payout_totals and appends one insert event for the group.
func (db *DB) insertFresh(ctx context.Context, tx *sql.Conn, fresh []Payout, now int64) error {
	if len(fresh) == 0 {
		return nil
	}
	if err := db.storeRows(ctx, tx, fresh, nil, now); err != nil {
		return err
	}
	if err := db.addTotals(ctx, tx, totalDelta{PayoutReceived, len(fresh), sumAmounts(fresh)}); err != nil {
		return err
	}
	return db.appendInsert(ctx, tx, fresh, now)
}

// sumAmounts is the sum of ps' amounts (fen).
func sumAmounts(ps []Payout) int64 {
	var sum int64
	for _, p := range ps {
		sum += p.Amount
	}
	return sum
}

// rowState is the state a new row is stored in (storeRows): with its batch and body
// position when SEALED, its fail_reason when DUPLICATE.
type rowState struct {
	state, batch, failReason string
	pos                      int
}

// repeats boxes the columns whose value repeats row after row (a group's merchant, appid,
// remark, scene, rail, group key, state and batch) once per run of equal values: boxing a
// string into an argument allocates, and storeRows boxes 17 values a row.
type repeats struct {
	last  [repColumns]string
	boxed [repColumns]any
}

// The columns repeats boxes.
const (
	repMchID = iota
	repAppID
	repRemark
	repSceneID
	repRail
	repGroupKey
	repState
	repBatch
	repColumns
)

// box returns s boxed, the box of column col's previous value when s equals it.
func (r *repeats) box(col int, s string) any {
	if r.boxed[col] == nil || r.last[col] != s {
		r.last[col], r.boxed[col] = s, s
	}
	return r.boxed[col]
}

// storeRows writes new rows (seqs assigned, ascending and contiguous, keys not stored) with
// multi-row INSERTs, in states[i] (states nil: every row RECEIVED). It reserves their keys in
// the key index, which takes them, and Position their last seq, once the transaction commits.
// It neither counts them in payout_totals nor appends events.
func (db *DB) storeRows(ctx context.Context, tx *sql.Conn, fresh []Payout, states []rowState, now int64) error {
	hashes, seqs := make([]int64, len(fresh)), make([]int64, len(fresh))
	for i := range fresh {
		hashes[i], seqs[i] = keyHash(fresh[i].OutDetailNo), fresh[i].Seq
	}
	last := fresh[len(fresh)-1].Seq
	if last > maxSeq {
		return fmt.Errorf("seq %d is past the key index's %d: start a new ledger file", last, int64(maxSeq))
	}
	if err := db.keys.reserve(hashes); err != nil {
		return err
	}
	db.afterCommit(func() {
		db.keys.add(hashes, seqs)
		db.posSeq.Store(last)
	})
	// InsertPayouts' rows name their state in the statement; the others bind it with the
	// batch columns and fail_reason.
	cols, row := `state`, `?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'RECEIVED'`
	if states != nil {
		cols, row = `state, out_batch_no, batch_pos, fail_reason`, `?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?`
	}
	stamp := any(now) // boxed once, not twice a row
	var rep repeats
	for lo := 0; lo < len(fresh); lo += insertChunk {
		chunk := fresh[lo:min(lo+insertChunk, len(fresh))]
		// bill_info is named only when a row has one, so ledgers of the batch rails keep
		// their statement (and tests can still write under schemas before 0004).
		bills := slices.ContainsFunc(chunk, func(p Payout) bool { return len(p.BillInfo) > 0 })
		args := db.rowArgs[:0]
		for i, p := range chunk {
			args = append(args, p.Seq, hashes[lo+i], p.OutDetailNo, rep.box(repMchID, p.MchID), rep.box(repAppID, p.AppID),
				p.SubMchID, p.OpenID, rep.box(repRemark, p.Remark), rep.box(repSceneID, p.SceneID), rep.box(repRail, p.Rail),
				rep.box(repGroupKey, p.GroupKey), p.Amount, p.UserNameCipher, p.ContentHash, int64(p.StreamSeq), stamp, stamp)
			if states != nil {
				st := states[lo+i]
				var batch, pos any // NULL outside a batch
				if st.batch != "" {
					batch, pos = rep.box(repBatch, st.batch), int64(st.pos)
				}
				args = append(args, rep.box(repState, st.state), batch, pos, st.failReason)
			}
			if bills {
				args = append(args, string(p.BillInfo))
			}
		}
		c, r := cols, `(`+row
		if bills {
			c, r = c+`, bill_info`, r+`,?`
		}
		q := `INSERT INTO payouts (seq, key_hash, out_detail_no, mchid, appid, sub_mchid, openid, remark, scene_id, rail,
			group_key, amount, user_name_cipher, content_hash, stream_seq, received_at, updated_at, ` + c + `) VALUES ` +
			strings.TrimSuffix(strings.Repeat(r+`),`, len(chunk)), ",")
		err := db.insertRows(ctx, tx, len(chunk) == insertChunk, q, args) // odd-sized tails are not worth caching
		clear(args)
		db.rowArgs = args[:0] // reused by the next chunk and write; it keeps no rows alive
		if err != nil {
			return err
		}
	}
	return nil
}

// appendInsert appends the insert event of rows just stored (storeRows): their seq range,
// each row's content digest, and RECEIVED, the state every row starts its history in.
func (db *DB) appendInsert(ctx context.Context, tx *sql.Conn, fresh []Payout, now int64) error {
	return db.appendEvent(ctx, tx, event{
		At: now, Source: srcIntake, Kind: kindInsert, To: PayoutReceived,
		Seqs:   encodeSeqs([]int64{fresh[0].Seq, fresh[len(fresh)-1].Seq}),
		Digest: rowDigests(fresh),
	})
}

// placeholders returns "?,?,…" with n marks.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// int64Args converts seqs to query arguments.
func int64Args(seqs []int64) []any {
	a := make([]any, len(seqs))
	for i, s := range seqs {
		a[i] = s
	}
	return a
}

// MarkClaimed moves every seq RECEIVED → CLAIMED in one transaction. Seqs already CLAIMED are
// left alone (a retried call is a no-op). If any seq is in another state, or unknown, nothing is
// applied and the error wraps ErrIllegalTransition (or ErrNotFound).
func (db *DB) MarkClaimed(ctx context.Context, seqs []int64) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		states, err := payoutStates(ctx, tx, seqs)
		if err != nil {
			return err
		}
		var move []int64
		for _, s := range seqs {
			switch st, ok := states[s]; {
			case !ok:
				return fmt.Errorf("payout seq=%d: %w", s, ErrNotFound)
			case st == PayoutReceived:
				move = append(move, s)
				states[s] = PayoutClaimed // a seq listed twice moves once
			case st != PayoutClaimed:
				return db.illegalf(ctx, "payout seq=%d %s → %s", s, st, PayoutClaimed)
			}
		}
		return db.movePayouts(ctx, tx, payoutMove{src: srcIntake, seqs: move, from: PayoutReceived, to: PayoutClaimed})
	})
	if err != nil {
		return fmt.Errorf("mark claimed: %w", err)
	}
	return nil
}

// Fail reasons of a DUPLICATE payout: "owner <instance id>", followed by conflictSuffix
// when the owner's request has other content (see parseOwner).
const (
	ownerPrefix    = "owner "
	conflictSuffix = "; other content"
)

// MarkDuplicate moves seq RECEIVED → DUPLICATE because the instance owner (another ledger's
// InstanceID) has the key, and writes its outcome. The fail_reason is "owner <owner>"; with
// conflict (the owner's request for the key has other content) it is "owner <owner>; other
// content" and the row is also recorded in the conflicts table (Summary.Conflicts counts it).
// Repeating it on a DUPLICATE row is a no-op, whatever the arguments. An owner that is not
// an instance id (1-32 of [0-9A-Za-z]) is ErrInvalid.
func (db *DB) MarkDuplicate(ctx context.Context, seq int64, owner string, conflict bool) error {
	reason, err := duplicateReason(owner, conflict)
	if err != nil {
		return fmt.Errorf("mark duplicate: %w", err)
	}
	err = db.write(ctx, func(tx *sql.Conn) error {
		states, err := payoutStates(ctx, tx, []int64{seq})
		if err != nil {
			return err
		}
		switch st, ok := states[seq]; {
		case !ok:
			return fmt.Errorf("payout seq=%d: %w", seq, ErrNotFound)
		case st == PayoutDuplicate:
			return nil
		case st != PayoutReceived:
			return db.illegalf(ctx, "payout seq=%d %s → %s", seq, st, PayoutDuplicate)
		}
		if conflict {
			if err := db.recordOwnerConflicts(ctx, tx, ms(db.now()), []ownerConflict{{seq, owner}}); err != nil {
				return err
			}
		}
		return db.movePayouts(ctx, tx, payoutMove{src: srcIntake, seqs: []int64{seq}, from: PayoutReceived,
			to: PayoutDuplicate, failReason: reason})
	})
	if err != nil {
		return fmt.Errorf("mark duplicate: %w", err)
	}
	return nil
}

// duplicateReason is the fail_reason of a payout DUPLICATE because instance owner has its key
// (with other content if conflict); ErrInvalid if owner is not an instance id.
func duplicateReason(owner string, conflict bool) (string, error) {
	if !validKey(owner) {
		return "", fmt.Errorf("%w: owner %q is not an instance id", ErrInvalid, owner)
	}
	if conflict {
		return ownerPrefix + owner + conflictSuffix, nil
	}
	return ownerPrefix + owner, nil
}

// ownerConflict is a DUPLICATE payout whose owner has its key with other content.
type ownerConflict struct {
	seq   int64
	owner string
}

// recordOwnerConflicts records each of cs, stored payouts, in the conflicts table (at at).
func (db *DB) recordOwnerConflicts(ctx context.Context, tx *sql.Conn, at int64, cs []ownerConflict) error {
	seqs := make([]int64, len(cs))
	for i, c := range cs {
		seqs[i] = c.seq
	}
	err := eachSeqChunk(seqs, func(part []int64) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO conflicts (seq, out_detail_no, content_hash, stream_seq, at)
			SELECT seq, out_detail_no, content_hash, stream_seq, ? FROM payouts WHERE seq IN (`+placeholders(len(part))+`)`,
			append([]any{at}, int64Args(part)...)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("record conflicts: %w", err)
	}
	for _, c := range cs {
		db.log.WarnContext(ctx, "ledger: owner has the out_detail_no with other content; recorded as a conflict",
			slog.Int64("seq", c.seq), slog.String("owner", c.owner))
	}
	return nil
}

// parseOwner returns the owner instance id named by a DUPLICATE payout's fail_reason, in
// either form MarkDuplicate writes, and whether the owner's request had other content. ok
// is false if reason names no owner.
func parseOwner(reason string) (owner string, conflict, ok bool) {
	rest, ok := strings.CutPrefix(reason, ownerPrefix)
	if !ok {
		return "", false, false
	}
	owner, conflict = strings.CutSuffix(rest, conflictSuffix)
	if !validKey(owner) {
		return "", false, false
	}
	return owner, conflict, true
}

// payoutStates returns the current state of each known seq.
func payoutStates(ctx context.Context, tx *sql.Conn, seqs []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(seqs))
	err := eachSeqChunk(seqs, func(part []int64) error {
		return eachRow(ctx, tx, `SELECT seq, state FROM payouts WHERE seq IN (`+placeholders(len(part))+`)`, int64Args(part),
			func(scan func(...any) error) error {
				var s int64
				var st string
				err := scan(&s, &st)
				out[s] = st
				return err
			})
	})
	return out, err
}

// payoutMove is one state change of a set of payouts that are all in state from.
type payoutMove struct {
	src, batch string
	seqs       []int64
	from, to   string
	failReason string // set when non-empty
	detailID   string // set when non-empty
	data       string // event data
	at         int64  // 0 = now
}

// movePayouts applies m (the caller has checked legality), writes outbox rows when m.to is
// final, and appends one event. Every row must be in m.from or the transaction fails.
func (db *DB) movePayouts(ctx context.Context, tx *sql.Conn, m payoutMove) error {
	if len(m.seqs) == 0 {
		return nil
	}
	if m.at == 0 {
		m.at = ms(db.now())
	}
	var amount int64 // of the rows moved, for payout_totals
	err := eachSeqChunk(m.seqs, func(part []int64) error {
		args := append([]any{m.to, m.at, m.failReason, m.failReason, m.detailID, m.detailID, m.from}, int64Args(part)...)
		n := 0
		err := eachRow(ctx, tx, `UPDATE payouts SET state = ?, updated_at = ?,
			fail_reason = CASE WHEN ? != '' THEN ? ELSE fail_reason END,
			detail_id = CASE WHEN ? != '' THEN ? ELSE detail_id END
			WHERE state = ? AND seq IN (`+placeholders(len(part))+`) RETURNING amount`, args, func(scan func(...any) error) error {
			var a int64
			err := scan(&a)
			n, amount = n+1, amount+a
			return err
		})
		if err != nil {
			return fmt.Errorf("move payouts to %s: %w", m.to, err)
		}
		if n != len(part) {
			return fmt.Errorf("move payouts %s → %s: %d of %d rows in state", m.from, m.to, n, len(part))
		}
		if PayoutFinal(m.to) {
			return db.writeOutcomes(ctx, tx, m.at, part)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := db.addTotals(ctx, tx, totalDelta{m.from, -len(m.seqs), -amount}, totalDelta{m.to, len(m.seqs), amount}); err != nil {
		return err
	}
	return db.appendEvent(ctx, tx, event{At: m.at, Source: m.src, Kind: kindPayoutState, OutBatchNo: m.batch,
		Seqs: encodeSeqs(m.seqs), From: m.from, To: m.to, Data: m.data})
}

// writeOutcomes writes the outbox row of each of seqs (at most seqChunk payouts, just moved to
// a final state), at at.
func (db *DB) writeOutcomes(ctx context.Context, tx *sql.Conn, at int64, seqs []int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO outcomes (seq, state, at) SELECT seq, state, ? FROM payouts WHERE seq IN (`+
		placeholders(len(seqs))+`)`, append([]any{at}, int64Args(seqs)...)...)
	if err != nil {
		return fmt.Errorf("write outcomes: %w", err)
	}
	return nil
}

const payoutCols = `seq, out_detail_no, mchid, appid, sub_mchid, openid, remark, scene_id, rail, group_key, amount,
	user_name_cipher, content_hash, stream_seq, state, coalesce(out_batch_no, ''), detail_id, fail_reason, received_at, updated_at,
	bill_info`

// scanPayout scans one row selected with payoutCols.
func scanPayout(sc interface{ Scan(...any) error }) (Payout, error) {
	var p Payout
	var streamSeq, recv, upd int64
	var billInfo string
	err := sc.Scan(&p.Seq, &p.OutDetailNo, &p.MchID, &p.AppID, &p.SubMchID, &p.OpenID, &p.Remark, &p.SceneID, &p.Rail,
		&p.GroupKey, &p.Amount, &p.UserNameCipher, &p.ContentHash, &streamSeq, &p.State, &p.OutBatchNo, &p.DetailID,
		&p.FailReason, &recv, &upd, &billInfo)
	p.StreamSeq, p.ReceivedAt, p.UpdatedAt = uint64(streamSeq), fromMS(recv), fromMS(upd)
	if billInfo != "" {
		p.BillInfo = []byte(billInfo)
	}
	return p, err
}

// queryPayouts runs a payoutCols query on the read pool.
func (db *DB) queryPayouts(ctx context.Context, q string, args ...any) ([]Payout, error) {
	rows, err := db.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Payout
	for rows.Next() {
		p, err := scanPayout(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PayoutsInState returns up to limit payouts in state, ordered by seq: the first page of
// PayoutsAfter (seqs start at 1).
func (db *DB) PayoutsInState(ctx context.Context, state string, limit int) ([]Payout, error) {
	return db.PayoutsAfter(ctx, state, 0, limit)
}

// PayoutsAfter returns up to limit payouts in state with seq > afterSeq, ordered by seq: pass
// the last seq of one page to get the next. RECEIVED and CLAIMED are served from the small
// partial index payouts_open, so paging through them costs O(page) whatever the ledger's
// size; other states scan from afterSeq.
func (db *DB) PayoutsAfter(ctx context.Context, state string, afterSeq int64, limit int) ([]Payout, error) {
	ps, err := db.queryPayouts(ctx, payoutsAfterQuery(state), state, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("payouts in state %s after seq %d: %w", state, afterSeq, err)
	}
	return ps, nil
}

// payoutsAfterQuery is PayoutsAfter's query (arguments state, afterSeq, limit). INDEXED BY
// makes SQLite fail rather than fall back to walking the table from afterSeq.
func payoutsAfterQuery(state string) string {
	if state == PayoutReceived || state == PayoutClaimed {
		return `SELECT ` + payoutCols + ` FROM payouts INDEXED BY payouts_open
			WHERE state IN ('RECEIVED', 'CLAIMED') AND state = ? AND seq > ? ORDER BY seq LIMIT ?`
	}
	return `SELECT ` + payoutCols + ` FROM payouts WHERE state = ? AND seq > ? ORDER BY seq LIMIT ?`
}

// Payout returns the payout with out_detail_no key, or ErrNotFound.
func (db *DB) Payout(ctx context.Context, key string) (Payout, error) {
	q, args := `SELECT `+payoutCols+` FROM payouts WHERE out_detail_no = ?`, []any{key} // read-only: a scan
	if db.keys != nil {
		seqs := db.keys.candidates(nil, keyHash(key))
		q, args = q+` AND seq IN (`+placeholders(len(seqs))+`)`, append(args, int64Args(seqs)...)
	}
	ps, err := db.queryPayouts(ctx, q, args...)
	switch {
	case err != nil:
		return Payout{}, fmt.Errorf("payout %s: %w", key, err)
	case len(ps) == 0:
		return Payout{}, fmt.Errorf("payout %s: %w", key, ErrNotFound)
	}
	return ps[0], nil
}
