package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Adoption: this ledger's instance takes over the payouts of a lost instance (issue 16,
// `processor adopt`). The adopter records the lost instance's payouts and batches here, then
// moves their claims to itself; until it has, the file is marked (BeginAdoption) and the
// processor refuses to run on it, so no sweep sees a payout recorded here whose claim is still
// the lost instance's (it would mark it DUPLICATE).

// ErrAdopting is returned by BeginAdoption when an adoption of another instance is unfinished.
var ErrAdopting = errors.New("another adoption is unfinished")

// Meta keys: the instance being adopted, and (prefix) each instance adopted for good, with
// the time its adoption ended; the audit finds a lost instance's keys through it.
const (
	metaAdopting = "adopting"
	metaAdopted  = "adopted."
)

// BeginAdoption marks the ledger as adopting instance. Marking it again for the same
// instance is a no-op (an adoption resumed after a crash); an unfinished adoption of another
// instance is ErrAdopting.
func (db *DB) BeginAdoption(ctx context.Context, instance string) error {
	if !validKey(instance) {
		return fmt.Errorf("begin adoption: %w: %q is not an instance id", ErrInvalid, instance)
	}
	err := db.write(ctx, func(tx *sql.Conn) error {
		cur, err := adoptingTx(ctx, tx)
		switch {
		case err != nil:
			return err
		case cur == instance:
			return nil
		case cur != "":
			return fmt.Errorf("adopting %s: %w", cur, ErrAdopting)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, metaAdopting, instance)
		return err
	})
	if err != nil {
		return fmt.Errorf("begin adoption: %w", err)
	}
	return nil
}

// Adopting returns the instance whose adoption is unfinished, or "".
func (db *DB) Adopting(ctx context.Context) (string, error) {
	return adoptingTx(ctx, db.rdb)
}

// EndAdoption clears the mark of BeginAdoption and records for good that this instance
// adopted that instance (Audit then looks for the lost instance's keys in this file). With no
// adoption begun it does nothing.
func (db *DB) EndAdoption(ctx context.Context) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		lost, err := adoptingTx(ctx, tx)
		if err != nil || lost == "" {
			return err
		}
		if lost == db.instanceID { // a restored copy completed: nothing was adopted
			_, err = tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, metaAdopting)
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`,
			metaAdopted+lost, db.now().UTC().Format(time.RFC3339Nano)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, metaAdopting)
		return err
	})
	if err != nil {
		return fmt.Errorf("end adoption: %w", err)
	}
	return nil
}

func adoptingTx(ctx context.Context, q metaQuerier) (string, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaAdopting).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read adoption mark: %w", err)
	}
	return v, nil
}

// Reclaim moves the DUPLICATE payouts seqs whose owner is instance (a request this ledger
// received while the lost instance held its key) back to RECEIVED, clearing their
// fail_reason and their DUPLICATE outcome, in one transaction: the adopter now owns them and pays them. A seq in any
// other state, or owned by another instance or with other content, is ErrIllegalTransition
// and nothing is written.
func (db *DB) Reclaim(ctx context.Context, seqs []int64, instance string) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		err := eachSeqChunk(seqs, func(part []int64) error {
			n := 0
			err := eachRow(ctx, tx, `SELECT fail_reason FROM payouts WHERE state = ? AND seq IN (`+placeholders(len(part))+`)`,
				append([]any{PayoutDuplicate}, int64Args(part)...), func(s func(...any) error) error {
					var reason string
					if err := s(&reason); err != nil {
						return err
					}
					if owner, conflict, ok := parseOwner(reason); !ok || owner != instance || conflict {
						return db.illegalf(ctx, "reclaim: a DUPLICATE with fail_reason %q is not %s's", reason, instance)
					}
					n++
					return nil
				})
			if err != nil {
				return err
			}
			if n != len(part) {
				return db.illegalf(ctx, "reclaim: %d of %d payouts are DUPLICATE", n, len(part))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := db.movePayouts(ctx, tx, payoutMove{src: srcIntake, seqs: seqs, from: PayoutDuplicate, to: PayoutReceived,
			data: "adopted from " + instance}); err != nil {
			return err
		}
		// The DUPLICATE outcome (published or not) gives way to the payout's final one.
		return eachSeqChunk(seqs, func(part []int64) error {
			in := placeholders(len(part))
			if _, err := tx.ExecContext(ctx, `UPDATE payouts SET fail_reason = '' WHERE seq IN (`+in+`)`, int64Args(part)...); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM outcomes WHERE seq IN (`+in+`)`, int64Args(part)...)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	return nil
}

// BodyDetail is one detail of a batch body (or a rail-bills manifest), in body order.
type BodyDetail struct {
	OutDetailNo string
	Amount      int64
}

// BodyDetails returns the details of a create body (or a rail-bills manifest) as the ledger
// checks them when sealing: out_detail_no and transfer_amount, in body order.
func BodyDetails(body []byte) ([]BodyDetail, error) {
	var cb createBody
	if err := json.Unmarshal(body, &cb); err != nil {
		return nil, fmt.Errorf("body is not a create request: %w", err)
	}
	out := make([]BodyDetail, len(cb.Details))
	for i, d := range cb.Details {
		out[i] = BodyDetail(d)
	}
	return out, nil
}

// metaJournalSince is the meta key of JournalSince.
const metaJournalSince = "journal_since"

// JournalSince returns the time from which every batch of this ledger holding a payout
// received from then on is journaled before its first send (internal/journal), recording it
// the first time it is asked: the zero time when the ledger holds no batch yet (everything is
// journaled), else now (batches sealed before may have been sent by an earlier version that
// journaled nothing). An adopter never calls a payout received earlier "never sent".
func (db *DB) JournalSince(ctx context.Context) (time.Time, error) {
	var since time.Time
	err := db.write(ctx, func(tx *sql.Conn) error {
		var v string
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaJournalSince).Scan(&v)
		switch {
		case err == nil:
			since, err = time.Parse(time.RFC3339Nano, v)
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var batches int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM batches LIMIT 1)`).Scan(&batches); err != nil {
			return err
		}
		if batches > 0 {
			since = db.now().UTC()
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, metaJournalSince, since.Format(time.RFC3339Nano))
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("journal since: %w", err)
	}
	return since, nil
}
