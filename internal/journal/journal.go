// Package journal keeps, off the replica's disk, a copy of every batch a processor is about to
// send: its number, rail, group, merchant, totals and exact bodies, in a JetStream object
// store (issue 16, adoption).
//
// A batch's number, members and body are committed in the ledger before the first send
// (docs/money-rules.md#commit-first). If the ledger's disk is lost, WeChat may hold batches no
// surviving file names; on the batch API WeChat deduplicates an out_detail_no only inside one
// batch, so paying those members again under a new number could pay them twice. The driver
// therefore puts a batch here before its first send (Put), and an adopter (`processor adopt`)
// reads every batch of the lost instance back (Batches) and resumes each under its own number
// with its own body: WeChat answers a replay of a number it holds with that batch, so nothing
// is paid twice, and a number it never saw is paid once.
//
// An entry is named by its out_batch_no and carries its instance in the object's metadata.
// Objects expire after the bucket's max age, which must be at least the request stream's (a
// payout whose request can still be replayed keeps the batch it was sent in).
package journal

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
)

// metaInstance is the object metadata key holding the instance id.
const metaInstance = "instance"

// Entry is one sealed batch as the driver is about to send it.
type Entry struct {
	Instance    string    `json:"instance"` // the ledger's instance id that sealed it
	OutBatchNo  string    `json:"out_batch_no"`
	Rail        string    `json:"rail"`
	GroupKey    string    `json:"group_key"`
	MchID       string    `json:"mchid"`
	TotalAmount int64     `json:"total_amount"`
	TotalNum    int       `json:"total_num"`
	SealedAt    time.Time `json:"sealed_at"`
	Body        []byte    `json:"body"`            // the frozen create body (rail bills: the manifest)
	Bills       [][]byte  `json:"bills,omitempty"` // rail bills: one create body per member, in body order
}

// Journal is one object store bucket of entries. It is safe for concurrent use.
type Journal struct {
	obs    jetstream.ObjectStore
	js     jetstream.JetStream // for the bucket stream's info, which its leader answers
	bucket string
}

// Ensure creates or updates the bucket (file storage, replicas, entries kept maxAge) and
// returns its Journal.
func Ensure(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, maxAge time.Duration) (*Journal, error) {
	cfg := jetstream.ObjectStoreConfig{
		Bucket: bucket, Description: "paystream: sealed batches before their first send",
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1), TTL: maxAge,
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("journal bucket %s: %w", bucket, err)
	}
	return &Journal{obs: obs, js: js, bucket: bucket}, nil
}

// Put stores e under its out_batch_no, replacing an earlier copy (the same batch put again
// after a restart holds the same bytes). It returns only once the server has stored it.
func (j *Journal) Put(ctx context.Context, e Entry) error {
	if e.Instance == "" || e.OutBatchNo == "" {
		return errors.New("journal: an entry needs its instance and out_batch_no")
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("journal %s: %w", e.OutBatchNo, err)
	}
	// The instance travels in the metadata too, so Batches reads only the instance's own.
	meta := jetstream.ObjectMeta{Name: e.OutBatchNo, Metadata: map[string]string{metaInstance: e.Instance}}
	if _, err := j.obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("journal %s: %w", e.OutBatchNo, err)
	}
	return nil
}

// Batches returns every entry of instance, in out_batch_no order.
func (j *Journal) Batches(ctx context.Context, instance string) ([]Entry, error) {
	infos, err := j.list(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(infos, func(a, b *jetstream.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	var out []Entry
	for _, info := range infos {
		if info.Metadata[metaInstance] != instance {
			continue
		}
		data, err := j.obs.GetBytes(ctx, info.Name)
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", info.Name, err)
		}
		var e Entry
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("journal %s: %w", info.Name, err)
		}
		if e.Instance != instance || e.OutBatchNo != info.Name {
			return nil, fmt.Errorf("journal %s: holds %s of instance %s", info.Name, e.OutBatchNo, e.Instance)
		}
		out = append(out, e)
	}
	return out, nil
}

// list returns the info of every entry, or an error: never a shorter list, since an adopter
// reads a batch missing from it as never sent and pays its members under a new number. Two
// ways a watch ends short are caught:
//   - The object store's own List takes a watch that closed before its last entry (its ordered
//     consumer failed to resume) for the end; here only the watch's end mark is the end.
//   - The end mark comes when the watch's consumer has nothing more pending in its copy of the
//     stream, and on a cluster that consumer may run on a replica behind the leader. So the
//     entries the leader held when the listing began (its stream info: one subject per entry)
//     must all be in the watch (docs/replication.md#reading-the-kv-buckets).
func (j *Journal) list(ctx context.Context) ([]*jetstream.ObjectInfo, error) {
	prefix := "$O." + j.bucket + ".M."
	held, err := broker.SubjectsOnLeader(ctx, j.js, "OBJ_"+j.bucket, prefix+">")
	if err != nil {
		return nil, fmt.Errorf("journal list: %w", err)
	}
	w, err := j.obs.Watch(ctx) // deletes too: the leader's subjects name deleted entries as well
	if err != nil {
		return nil, fmt.Errorf("journal list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var infos []*jetstream.ObjectInfo
	seen := map[string]bool{}
	for {
		select {
		case info, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, fmt.Errorf("journal list: the watch closed before its last entry: %w", broker.ErrShortRead)
			case info == nil:
				for subject := range held {
					if name := strings.TrimPrefix(subject, prefix); !seen[name] {
						return nil, fmt.Errorf("journal list: the watch ended without %s, which the stream's leader holds (a replica behind the leader): %w", subject, broker.ErrShortRead)
					}
				}
				return infos, nil
			}
			seen[base64.URLEncoding.EncodeToString([]byte(info.Name))] = true
			if !info.Deleted {
				infos = append(infos, info)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("journal list: %w", ctx.Err())
		}
	}
}
