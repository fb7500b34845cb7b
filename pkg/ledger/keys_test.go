package ledger

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

func TestKeyIndex(t *testing.T) {
	k := &keyIndex{}
	defer k.release()
	const n = 300_000 // several doublings past minSlots
	hashes, seqs := make([]int64, 0, 1000), make([]int64, 0, 1000)
	for lo := 1; lo <= n; lo += 1000 {
		hashes, seqs = hashes[:0], seqs[:0]
		for s := lo; s < lo+1000; s++ {
			hashes, seqs = append(hashes, keyHash(fmt.Sprint("K", s))), append(seqs, int64(s))
		}
		if err := k.reserve(hashes); err != nil {
			t.Fatal(err)
		}
		k.add(hashes, seqs)
	}
	used, size := 0, 0
	for _, s := range k.segs {
		if s.used*8 > len(s.slots)*maxLoad {
			t.Fatalf("segment holds %d in %d slots: over the load limit", s.used, len(s.slots))
		}
		used, size = used+s.used, size+len(s.slots)
	}
	if used != n || size > 4*n {
		t.Fatalf("%d keys in %d slots, want %d in at most %d", used, size, n, 4*n)
	}
	extra := 0
	for s := 1; s <= n; s++ {
		c := k.candidates(nil, keyHash(fmt.Sprint("K", s)))
		if !slices.Contains(c, int64(s)) {
			t.Fatalf("seq %d missing from its candidates %v", s, c)
		}
		extra += len(c) - 1
	}
	// About n²/2³² keys (21 here) share their 32-bit tag with another: birthday pairs.
	if extra > 3*n*n>>32 {
		t.Errorf("%d stray candidates over %d keys", extra, n)
	}
	if c := k.candidates(nil, keyHash("absent")); len(c) != 0 {
		t.Errorf("absent key has candidates %v", c)
	}

	t.Run("one hash, several seqs", func(t *testing.T) {
		h := keyHash("collide")
		if err := k.reserve([]int64{h, h}); err != nil {
			t.Fatal(err)
		}
		k.add([]int64{h, h}, []int64{n + 1, n + 2})
		if c := k.candidates(nil, h); !slices.Equal(c, []int64{n + 1, n + 2}) {
			t.Errorf("candidates %v, want both seqs", c)
		}
	})
}

// TestOpen_LoadsKeys reopens a ledger holding more keys than one load chunk: every stored key
// must be found again (Existing, with its seq), and a changed one must be a Conflict.
func TestOpen_LoadsKeys(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	const n = 70_000
	ps := make([]Payout, n)
	for i := range ps {
		ps[i] = newPayout(fmt.Sprint("L", i), 100)
	}
	var seqs []int64
	for lo := 0; lo < n; lo += MaxGroup {
		seqs = append(seqs, mustInsert(t, db, ps[lo:min(lo+MaxGroup, n)]...)...)
	}
	path := db.Path()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpenPath(t, path)
	ps[n-1] = newPayout(ps[n-1].OutDetailNo, 101) // same key, other content
	for lo := 0; lo < n; lo += MaxGroup {
		res, err := db.InsertPayouts(ctx, ps[lo:min(lo+MaxGroup, n)])
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range res {
			i := lo + j
			want := Existing
			if i == n-1 {
				want = Conflict
			}
			if r.Status != want || r.Seq != seqs[i] {
				t.Fatalf("key %d after reopen: %v seq %d, want %v seq %d", i, r.Status, r.Seq, want, seqs[i])
			}
		}
	}
}
