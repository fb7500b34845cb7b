package ledger

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"sync"
	"syscall"
	"unsafe"
)

// keyHash is the 64-bit FNV-1a hash of an out_detail_no.
func keyHash(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int64(h.Sum64())
}

// maxSeq is the largest seq the key index can hold (its slots keep 32 bits of seq).
const maxSeq = math.MaxUint32

// keyIndex finds the seqs that may hold a key, in memory, so that intake stays append-only
// at millions of rows (no on-disk random-key index). It only grows after a commit (see
// DB.write), so it never names an uncommitted row.
//
// Each entry is an 8-byte slot: a 32-bit tag of the key hash and the 32-bit seq; 0 marks an
// empty slot (seqs start at 1). The tag's top byte picks one of 256 segments, each an
// open-addressing table (linear probing) that doubles on its own, so growing never holds
// two copies of the whole index. A slot's position derives from the tag alone, so a segment
// is resized without the rows. A lookup returns every seq with a matching tag; the caller
// compares the stored text, so tag collisions (and FNV collisions) cost a row read and
// nothing else.
//
// The segments live outside the Go heap, in anonymous mappings: the garbage collector
// neither scans them nor counts them toward the next collection's target. A processor's
// memory therefore grows by 8–21 bytes per stored payout; a Go map costs about 38 bytes
// live, and twice that at the collector's peak.
type keyIndex struct {
	mu   sync.RWMutex
	segs [256]segment
}

// segment is one open-addressing table of the index.
type segment struct {
	slots []uint64 // len is a power of two, at least minSlots; nil until first reserved
	shift uint     // 64 − log2(len(slots))
	used  int
}

const (
	minSlots = 1 << 10
	maxLoad  = 6 // in eighths: a segment doubles past 75% full
)

// loadKeys builds the index from the (seq, key_hash) covering index.
func loadKeys(ctx context.Context, q querier) (*keyIndex, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, key_hash FROM payouts INDEXED BY payouts_keys`)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	defer rows.Close()
	k := &keyIndex{}
	const chunk = 1 << 16
	hashes, seqs := make([]int64, 0, chunk), make([]int64, 0, chunk)
	flush := func() error {
		if err := k.reserve(hashes); err != nil {
			return err
		}
		k.add(hashes, seqs)
		hashes, seqs = hashes[:0], seqs[:0]
		return nil
	}
	for rows.Next() {
		var seq, h int64
		if err := rows.Scan(&seq, &h); err != nil {
			k.release()
			return nil, fmt.Errorf("load keys: %w", err)
		}
		hashes, seqs = append(hashes, h), append(seqs, seq)
		if len(hashes) == chunk {
			if err := flush(); err != nil {
				k.release()
				return nil, fmt.Errorf("load keys: %w", err)
			}
		}
	}
	if err := errors.Join(rows.Err(), flush()); err != nil {
		k.release()
		return nil, fmt.Errorf("load keys: %w", err)
	}
	return k, nil
}

// tagOf is 32 well-mixed bits of a key hash (FNV-1a's low bits are weak; the murmur3
// finalizer spreads every input bit over the output).
func tagOf(h int64) uint64 {
	x := uint64(h)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x >> 32
}

// home is the first slot probed for tag.
func (s *segment) home(tag uint64) uint64 { return (tag * 0x9E3779B97F4A7C15) >> s.shift }

// reserve makes room for the keys of hashes, growing each segment at most once. The writer
// calls it inside the transaction that stores them, so add, after the commit, cannot fail.
func (k *keyIndex) reserve(hashes []int64) error {
	var n [256]int
	for _, h := range hashes {
		n[tagOf(h)>>24]++
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.segs {
		if err := k.segs[i].reserve(n[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *segment) reserve(n int) error {
	size := max(len(s.slots), minSlots)
	for (s.used+n)*8 > size*maxLoad {
		size *= 2
	}
	if size == len(s.slots) {
		return nil
	}
	mem, err := syscall.Mmap(-1, 0, size*8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("key index segment of %d slots: %w", size, err)
	}
	old := s.slots
	s.slots = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), size)
	s.shift = uint(64 - bits.TrailingZeros(uint(size)))
	s.used = 0
	for _, v := range old {
		if v != 0 {
			s.place(v)
		}
	}
	unmap(old)
	return nil
}

// place stores slot value v at the first free slot from its home.
func (s *segment) place(v uint64) {
	mask := uint64(len(s.slots) - 1)
	for i := s.home(v >> 32); ; i = (i + 1) & mask {
		if s.slots[i] == 0 {
			s.slots[i] = v
			s.used++
			return
		}
	}
}

// release unmaps every segment; the index is empty afterwards.
func (k *keyIndex) release() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.segs {
		unmap(k.segs[i].slots)
		k.segs[i] = segment{}
	}
}

func unmap(slots []uint64) {
	if len(slots) > 0 {
		_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(&slots[0])), len(slots)*8))
	}
}

// add records committed rows, for which reserve made room. seqs are at most maxSeq.
func (k *keyIndex) add(hashes, seqs []int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, h := range hashes {
		tag := tagOf(h)
		k.segs[tag>>24].place(tag<<32 | uint64(seqs[i]))
	}
}

// candidates appends the seqs that may be stored under hash h.
func (k *keyIndex) candidates(dst []int64, h int64) []int64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	tag := tagOf(h)
	s := &k.segs[tag>>24]
	if len(s.slots) == 0 {
		return dst
	}
	mask := uint64(len(s.slots) - 1)
	for i := s.home(tag); s.slots[i] != 0; i = (i + 1) & mask {
		if s.slots[i]>>32 == tag {
			dst = append(dst, int64(s.slots[i]&math.MaxUint32))
		}
	}
	return dst
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
