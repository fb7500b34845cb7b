package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/natstest"
)

// mustEnsure opens a journal bucket on a fresh embedded server.
func mustEnsure(t *testing.T) *Journal {
	t.Helper()
	js := natstest.Connect(t, natstest.Run(t))
	j, err := Ensure(context.Background(), js, "journal", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// entry returns a journal entry of instance numbered no, with a body of size bytes that
// differ from every other entry's.
func entry(instance, no string, size int) Entry {
	r := rand.New(rand.NewPCG(uint64(len(no)), uint64(size)))
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(r.UintN(256))
	}
	copy(body, no)
	return Entry{Instance: instance, OutBatchNo: no, Rail: "bills", GroupKey: "1900000109/bills", MchID: "1900000109",
		TotalAmount: 300, TotalNum: 2, SealedAt: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
		Body: body, Bills: [][]byte{[]byte(`{"out_bill_no":"` + no + `a"}`), []byte(`{"out_bill_no":"` + no + `b"}`)}}
}

// mustEqual fails unless got is want, field by field and byte for byte.
func mustEqual(t *testing.T, got, want Entry) {
	t.Helper()
	if !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("%s: body of %d bytes differs from the %d bytes put", want.OutBatchNo, len(got.Body), len(want.Body))
	}
	if !slices.EqualFunc(got.Bills, want.Bills, bytes.Equal) {
		t.Fatalf("%s: bills %q, want %q", want.OutBatchNo, got.Bills, want.Bills)
	}
	if !got.SealedAt.Equal(want.SealedAt) {
		t.Fatalf("%s: sealed at %v, want %v", want.OutBatchNo, got.SealedAt, want.SealedAt)
	}
	got.Body, got.Bills, got.SealedAt = nil, nil, time.Time{}
	want.Body, want.Bills, want.SealedAt = nil, nil, time.Time{}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("entry %+v, want %+v", got, want)
	}
}

func TestJournal_Batches(t *testing.T) {
	ctx := context.Background()
	j := mustEnsure(t)

	if got, err := j.Batches(ctx, "abc"); err != nil || len(got) != 0 {
		t.Fatalf("Batches of an empty bucket = %d entries, %v; want none, nil", len(got), err)
	}

	// Put out of order; "abcd" shares its prefix with "abc" and must not leak into it. The
	// 600 KB body crosses the object store's 128 KB chunks.
	abc := []Entry{entry("abc", "B3", 200), entry("abc", "B1", 600<<10), entry("abc", "B2", 1)}
	abcd := []Entry{entry("abcd", "B0", 300), entry("abcd", "B4", 400)}
	for _, e := range []Entry{abc[0], abcd[1], abc[1], abcd[0], abc[2]} {
		if err := j.Put(ctx, e); err != nil {
			t.Fatalf("Put(%s): %v", e.OutBatchNo, err)
		}
	}
	// The same batch put again (a restart before its first send) keeps one entry.
	if err := j.Put(ctx, abc[1]); err != nil {
		t.Fatalf("Put(%s) again: %v", abc[1].OutBatchNo, err)
	}

	for _, tt := range []struct {
		name     string
		instance string
		want     []Entry
	}{
		{name: "instance abc, in out_batch_no order", instance: "abc", want: []Entry{abc[1], abc[2], abc[0]}},
		{name: "instance abcd", instance: "abcd", want: abcd},
		{name: "a prefix of both", instance: "ab"},
		{name: "unknown instance", instance: "zzz"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := j.Batches(ctx, tt.instance)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Batches(%s) = %d entries, want %d", tt.instance, len(got), len(tt.want))
			}
			for i := range got {
				mustEqual(t, got[i], tt.want[i])
			}
		})
	}
}

func TestJournal_PutRefuses(t *testing.T) {
	ctx := context.Background()
	j := mustEnsure(t)
	for _, tt := range []struct {
		name string
		edit func(*Entry)
	}{
		{name: "no instance", edit: func(e *Entry) { e.Instance = "" }},
		{name: "no out_batch_no", edit: func(e *Entry) { e.OutBatchNo = "" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := entry("abc", "B1", 10)
			tt.edit(&e)
			if err := j.Put(ctx, e); err == nil {
				t.Fatalf("Put(%+v) = nil, want an error", e)
			}
		})
	}
	if got, err := j.Batches(ctx, "abc"); err != nil || len(got) != 0 {
		t.Fatalf("Batches after refused puts = %d entries, %v; want none", len(got), err)
	}
}

// cutStore is an object store whose watches end after their first entry: closed, as the
// library closes one whose ordered consumer could not resume, or with the end mark, as a
// watch whose consumer runs on a replica behind the stream's leader.
type cutStore struct {
	jetstream.ObjectStore
	mark bool // end with the end mark, not a close
}

func (s cutStore) Watch(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.ObjectWatcher, error) {
	w, err := s.ObjectStore.Watch(ctx, opts...)
	if err != nil {
		return nil, err
	}
	cut := make(chan *jetstream.ObjectInfo, 2)
	cut <- <-w.Updates()
	if s.mark {
		cut <- nil
	} else {
		close(cut)
	}
	return cutWatcher{w, cut}, nil
}

type cutWatcher struct {
	jetstream.ObjectWatcher
	updates chan *jetstream.ObjectInfo
}

func (w cutWatcher) Updates() <-chan *jetstream.ObjectInfo { return w.updates }

// TestJournal_BatchesCutShortIsAnError: a listing whose watch closes before its end mark, or
// whose end mark comes before every entry the stream's leader holds, is an error, never the
// entries read so far: an adopter pays the members of a batch missing from it under a new
// number, and WeChat may hold that batch (the object store's own List returned the entries so
// far, with no error).
func TestJournal_BatchesCutShortIsAnError(t *testing.T) {
	ctx := context.Background()
	j := mustEnsure(t)
	putAll(t, j, "abc", "B1", "B2", "B3")
	for _, mark := range []bool{false, true} {
		cut := &Journal{obs: cutStore{j.obs, mark}, js: j.js, bucket: j.bucket}
		if got, err := cut.Batches(ctx, "abc"); !errors.Is(err, broker.ErrShortRead) {
			t.Fatalf("Batches through a watch cut after one entry (end mark %t) = %d entries, %v; want broker.ErrShortRead", mark, len(got), err)
		}
	}
	if got, err := j.Batches(ctx, "abc"); err != nil || len(got) != 3 {
		t.Fatalf("Batches = %d entries, %v; want 3", len(got), err)
	}
}

// TestJournal_BatchesSkipsDeleted: an entry deleted by hand is not listed, and does not make
// the listing look short (the leader's stream still names it, as a delete).
func TestJournal_BatchesSkipsDeleted(t *testing.T) {
	ctx := context.Background()
	j := mustEnsure(t)
	putAll(t, j, "abc", "B1", "B2", "B3")
	if err := j.obs.Delete(ctx, "B2"); err != nil {
		t.Fatal(err)
	}
	got, err := j.Batches(ctx, "abc")
	if err != nil || len(got) != 2 || got[0].OutBatchNo != "B1" || got[1].OutBatchNo != "B3" {
		t.Fatalf("Batches = %+v, %v; want B1 and B3", got, err)
	}
}

// putAll puts an entry of instance for each of numbers, 10 bytes of body each.
func putAll(t *testing.T, j *Journal, instance string, numbers ...string) {
	t.Helper()
	for _, no := range numbers {
		if err := j.Put(context.Background(), entry(instance, no, 10)); err != nil {
			t.Fatal(err)
		}
	}
}
