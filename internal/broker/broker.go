// Package broker owns paystream's use of NATS JetStream: the embedded server that is the
// default, the connection to an external server or cluster, and the topology (streams,
// the shared durable consumer, the ownership KV bucket), created idempotently at start.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Topology names every JetStream object paystream uses. Zero values are not valid; start
// from DefaultTopology.
type Topology struct {
	Stream          string        `yaml:"stream"`           // payout requests
	Subjects        string        `yaml:"subjects"`         // e.g. payouts.requests.>
	CancelSubjects  string        `yaml:"cancel-subjects"`  // upstream cancels, in the same stream: payouts.cancel.>
	DuplicateWindow time.Duration `yaml:"duplicate-window"` // Nats-Msg-Id dedup window
	// MaxAge is how long a request rests in the stream. Processors take a request in (ledger
	// commit, then ack) within seconds; the age bounds what rests (ciphertext names, openids)
	// and must outlast any backlog: an unconsumed request older than this is gone.
	MaxAge   time.Duration `yaml:"max-age"`
	Replicas int           `yaml:"replicas"` // 1 embedded, 3 on a cluster

	Consumer      string          `yaml:"consumer"`        // durable pull consumer shared by all replicas
	AckWait       time.Duration   `yaml:"ack-wait"`        // ≥ 30 s in production
	MaxDeliver    int             `yaml:"max-deliver"`     // -1: JetStream never gives up on (and silently drops) a request
	Backoff       []time.Duration `yaml:"backoff"`         // redelivery backoff (len ≤ MaxDeliver); JetStream uses Backoff[0] as the first ack wait
	MaxAckPending int             `yaml:"max-ack-pending"` // sized for the prefetch of all replicas

	ResultsStream     string `yaml:"results-stream"`
	ResultsSubjects   string `yaml:"results-subjects"` // payouts.results.<state>
	DeadLetterStream  string `yaml:"dead-letter-stream"`
	DeadLetterSubject string `yaml:"dead-letter-subject"` // payouts.deadletter.<reason class>
	// DeadLetterMaxAge is how long a dead letter (no plaintext name, but openids) rests.
	DeadLetterMaxAge time.Duration `yaml:"dead-letter-max-age"`

	ClaimsBucket string        `yaml:"claims-bucket"`
	ClaimsTTL    time.Duration `yaml:"claims-ttl"` // longer than any redelivery or replay window

	// InstancesBucket holds every processor instance's heartbeat (internal/instances): who
	// is alive, who stopped cleanly, who went silent while owning claims.
	InstancesBucket string        `yaml:"instances-bucket"`
	HeartbeatEvery  time.Duration `yaml:"heartbeat-every"` // how often an instance beats
	SilentAfter     time.Duration `yaml:"silent-after"`    // an instance not seen this long without a clean stop is silent

	// BatchesBucket is the object store where every batch is journaled before its first
	// send (internal/journal), kept max-age: what an adopter resumes when a ledger is lost.
	BatchesBucket string `yaml:"batches-bucket"`
}

// DefaultTopology returns the production defaults.
func DefaultTopology() Topology {
	return Topology{
		Stream:            "PAYOUTS",
		Subjects:          "payouts.requests.>",
		CancelSubjects:    "payouts.cancel.>",
		DuplicateWindow:   24 * time.Hour,
		MaxAge:            30 * 24 * time.Hour,
		Replicas:          1,
		Consumer:          "processors",
		AckWait:           60 * time.Second,
		MaxDeliver:        -1,
		Backoff:           []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute},
		MaxAckPending:     20000,
		ResultsStream:     "PAYOUT_RESULTS",
		ResultsSubjects:   "payouts.results.>",
		DeadLetterStream:  "PAYOUT_DEADLETTER",
		DeadLetterSubject: "payouts.deadletter",
		DeadLetterMaxAge:  90 * 24 * time.Hour,
		ClaimsBucket:      "payout_claims",
		ClaimsTTL:         90 * 24 * time.Hour,
		InstancesBucket:   "paystream_instances",
		BatchesBucket:     "paystream_batches",
		HeartbeatEvery:    10 * time.Second,
		SilentAfter:       2 * time.Minute,
	}
}

// Ensure creates or updates every stream, the consumer and the claims bucket. It is safe
// to call from every replica at every start.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, jetstream.KeyValue, error) {
	streams := []jetstream.StreamConfig{
		{
			Name: t.Stream, Subjects: []string{t.Subjects, t.CancelSubjects}, Storage: jetstream.FileStorage,
			Duplicates: t.DuplicateWindow, Replicas: t.Replicas, Retention: jetstream.LimitsPolicy,
			MaxMsgSize: 1 << 20, MaxAge: t.MaxAge,
		},
		{
			Name: t.ResultsStream, Subjects: []string{t.ResultsSubjects}, Storage: jetstream.FileStorage,
			Duplicates: t.DuplicateWindow, Replicas: t.Replicas,
		},
		{
			Name: t.DeadLetterStream, Subjects: []string{t.DeadLetterSubject + ".>"}, Storage: jetstream.FileStorage,
			Duplicates: t.DuplicateWindow, Replicas: t.Replicas, MaxAge: t.DeadLetterMaxAge,
		},
	}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, nil, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, t.Stream, jetstream.ConsumerConfig{
		Durable:       t.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		BackOff:       t.Backoff,
		MaxAckPending: t.MaxAckPending,
		FilterSubject: t.Subjects,
		Replicas:      t.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("consumer %s: %w", t.Consumer, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: t.ClaimsBucket, TTL: t.ClaimsTTL, Storage: jetstream.FileStorage, Replicas: t.Replicas, History: 1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("claims bucket %s: %w", t.ClaimsBucket, err)
	}
	return cons, kv, nil
}

// EnsureCancels creates or updates instance's own durable consumer of the cancels for
// merchant mchID (subject <cancel prefix>.<mchid>). Every replica has one, so every replica
// sees every cancel: only the one whose ledger holds the payout can act on it. Call it after
// Ensure.
func EnsureCancels(ctx context.Context, js jetstream.JetStream, t Topology, instance, mchID string) (jetstream.Consumer, error) {
	name := "cancels-" + instance
	cons, err := js.CreateOrUpdateConsumer(ctx, t.Stream, jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		FilterSubject: strings.TrimSuffix(t.CancelSubjects, ">") + mchID,
		Replicas:      t.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	return cons, nil
}

// Conn is how to reach NATS. With URL empty the caller runs an embedded server.
type Conn struct {
	URL       string `yaml:"url"`        // nats://host:4222[,nats://…]; empty → embedded
	CredsFile string `yaml:"creds-file"` // NATS credentials (JWT + nkey)
	TLSCA     string `yaml:"tls-ca"`
	TLSCert   string `yaml:"tls-cert"`
	TLSKey    string `yaml:"tls-key"`
}

// Options returns the nats.go options for c, with a name and bounded reconnects that log.
func (c Conn) Options(name string, log *slog.Logger) []nats.Option {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts
}

// Embedded is an in-process JetStream server, the default when no URL is configured.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded runs a JetStream server storing under storeDir and listening on listen
// (host:port; port 0 picks a free one). It returns once the server accepts connections.
func StartEmbedded(storeDir, listen string) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "paystream-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(storeDir, "jetstream"),
		NoSigs:     true,
		MaxPayload: 2 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the client URL of the embedded server.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it (JetStream state is flushed to disk).
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
