package ledger

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
)

// keyHash is the 64-bit FNV-1a hash of an out_detail_no.
func keyHash(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int64(h.Sum64())
}

// keyIndex maps key_hash → seq for every stored payout, in memory (about 20 bytes a payout).
// It replaces an on-disk random-key index so that intake stays append-only at millions of
// rows. It only grows after a commit (see DB.write), so it never names an uncommitted row.
type keyIndex struct {
	mu    sync.RWMutex
	one   map[int64]int64   // hash → seq
	multi map[int64][]int64 // hashes shared by several keys (FNV collisions): every seq
}

// loadKeys builds the index from the (seq, key_hash) covering index.
func loadKeys(ctx context.Context, q querier) (*keyIndex, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, key_hash FROM payouts INDEXED BY payouts_keys`)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	defer rows.Close()
	k := &keyIndex{one: map[int64]int64{}, multi: map[int64][]int64{}}
	for rows.Next() {
		var seq, h int64
		if err := rows.Scan(&seq, &h); err != nil {
			return nil, fmt.Errorf("load keys: %w", err)
		}
		k.addLocked(h, seq)
	}
	return k, rows.Err()
}

func (k *keyIndex) addLocked(h, seq int64) {
	if s, ok := k.one[h]; ok {
		delete(k.one, h)
		k.multi[h] = []int64{s}
	}
	if m, ok := k.multi[h]; ok {
		k.multi[h] = append(m, seq)
		return
	}
	k.one[h] = seq
}

// add records committed rows.
func (k *keyIndex) add(hashes, seqs []int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range hashes {
		k.addLocked(hashes[i], seqs[i])
	}
}

// candidates appends the seqs stored under hash h.
func (k *keyIndex) candidates(dst []int64, h int64) []int64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if s, ok := k.one[h]; ok {
		return append(dst, s)
	}
	return append(dst, k.multi[h]...)
}

// lookupKeys returns the stored rows holding any of keys, by out_detail_no.
func (db *DB) lookupKeys(ctx context.Context, q querier, keys []string) (map[string]storedKey, error) {
	var seqs []int64
	for _, key := range keys {
		seqs = db.keys.candidates(seqs, keyHash(key))
	}
	out := make(map[string]storedKey, len(seqs))
	err := eachSeqChunk(seqs, func(part []int64) error {
		return eachRow(ctx, q, `SELECT seq, out_detail_no, content_hash, state FROM payouts WHERE seq IN (`+
			placeholders(len(part))+`)`, int64Args(part), func(scan func(...any) error) error {
			var k storedKey
			var key string
			err := scan(&k.seq, &key, &k.contentHash, &k.state)
			out[key] = k
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("look up keys: %w", err)
	}
	return out, nil
}

// afterCommit queues fn to run once the current write transaction commits. Must run inside
// db.write.
func (db *DB) afterCommit(fn func()) { db.onCommit = append(db.onCommit, fn) }
