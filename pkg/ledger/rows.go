package ledger

import "context"

// eachRow runs query on q and calls fn with a scanner for every row.
func eachRow(ctx context.Context, q querier, query string, args []any, fn func(scan func(...any) error) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// seqChunk bounds the seqs bound into one "seq IN (…)" statement.
const seqChunk = 1000

// eachSeqChunk calls fn with consecutive slices of at most seqChunk seqs.
func eachSeqChunk(seqs []int64, fn func(part []int64) error) error {
	for lo := 0; lo < len(seqs); lo += seqChunk {
		if err := fn(seqs[lo:min(lo+seqChunk, len(seqs))]); err != nil {
			return err
		}
	}
	return nil
}
