package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrShortRead: a listing through a watch or consumer ended before what the stream's leader
// held when it began (its consumer ran on a copy behind the leader, or closed early). The
// listing is incomplete and must be read again; nothing may be decided from it.
var ErrShortRead = errors.New("the listing ended short of what the stream's leader holds (read it again)")

// Entry is a key's latest value in a KV bucket, as LeaderGet read it.
type Entry struct {
	Value    []byte
	Revision uint64 // the stream sequence of the value, as KeyValueEntry.Revision
}

// LeaderGet reads key's latest value in kv (on js) from the leader of the bucket's stream. A
// KeyValue.Get is a direct get, which any replica of the stream, or a mirror with direct
// gets, may answer, and one that lags the leader answers "not found" for a key created a
// moment ago (docs/replication.md#reading-the-kv-buckets). A decision that reads an absent
// key as "nobody has it" reads through LeaderGet, which sends the stream's message get (only
// the leader answers it). A key with no value, or whose latest is a delete or purge marker,
// is an error wrapping jetstream.ErrKeyNotFound, as with Get; a bucket whose stream is gone,
// jetstream.ErrBucketNotFound.
func LeaderGet(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string) (Entry, error) {
	subject := "$KV." + kv.Bucket() + "." + key
	m, err := lastOnLeader(ctx, js, "KV_"+kv.Bucket(), subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return Entry{}, fmt.Errorf("get %s: %w", subject, jetstream.ErrKeyNotFound)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return Entry{}, fmt.Errorf("get %s: %w: %w", subject, jetstream.ErrBucketNotFound, err)
	case err != nil:
		return Entry{}, err
	case m.Subject != subject:
		return Entry{}, fmt.Errorf("get %s from the leader: %w", subject, jetstream.ErrInvalidJetStreamResponse)
	}
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return Entry{}, fmt.Errorf("get %s from the leader: %w", subject, err)
		}
		// A delete or purge marker, written by a client or by the server (a TTL's end).
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" || h.Get(jetstream.MarkerReasonHeader) != "" {
			return Entry{}, fmt.Errorf("get %s: %w", subject, jetstream.ErrKeyNotFound)
		}
	}
	return Entry{Value: m.Data, Revision: m.Seq}, nil
}

// LastSeqOnLeader returns the sequence of the last message stored on subject (wildcards
// allowed) in stream, as the stream's leader holds it, or 0 when there is none. A watch whose
// consumer may run on a replica behind the leader is complete only once it reaches it.
func LastSeqOnLeader(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, error) {
	m, err := lastOnLeader(ctx, js, stream, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return m.Seq, nil
}

// SubjectsOnLeader returns the subjects of stream matching filter that hold messages, with
// their counts, as the stream's leader holds them (its stream info, paged).
func SubjectsOnLeader(ctx context.Context, js jetstream.JetStream, stream, filter string) (map[string]uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// storedMsg is a message as the stream's message get returns it.
type storedMsg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Header  []byte `json:"hdrs"`
	Data    []byte `json:"data"`
}

// lastOnLeader reads the last message on subject in stream with the stream's message get,
// which only the leader answers. No message is an error wrapping jetstream.ErrMsgNotFound,
// no stream jetstream.ErrStreamNotFound.
func lastOnLeader(ctx context.Context, js jetstream.JetStream, stream, subject string) (*storedMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, err
	}
	msg, err := js.Conn().RequestWithContext(ctx, apiPrefix(js.Options())+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("get %s from the leader: %w", subject, err)
	}
	var resp struct {
		Message *storedMsg          `json:"message"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("get %s from the leader: %w", subject, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, fmt.Errorf("get %s: %w", subject, jetstream.ErrMsgNotFound)
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil, fmt.Errorf("get %s: %w: %w", subject, jetstream.ErrStreamNotFound, resp.Error)
	case resp.Error != nil:
		return nil, fmt.Errorf("get %s from the leader: %w", subject, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("get %s from the leader: %w", subject, jetstream.ErrInvalidJetStreamResponse)
	}
	return resp.Message, nil
}

// apiPrefix is the subject prefix of the JetStream API that o addresses.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}
