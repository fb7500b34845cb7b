package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// health is what /readyz, /status.json and the status page know of the running replica. It
// exists from the moment the ledger is open, so /livez answers (and /readyz says what is
// missing) while the processor still waits for JetStream; the parts are set as they come up.
type health struct {
	db      *ledger.DB
	started time.Time
	static  ops.Runtime // instance, merchant, product, version

	nc       atomic.Pointer[nats.Conn]
	consumer atomic.Pointer[jetstream.Consumer]
	pipe     atomic.Pointer[pipeline.Pipeline]
	running  atomic.Bool                          // the pipeline's stages run
	silent   atomic.Pointer[[]ops.SilentInstance] // other instances gone silent (liveness)
	lite     atomic.Pointer[replica.Process]      // litestream, when replica.url is set
}

// notReady lists why the replica should not get traffic; empty means ready. An open WeChat
// breaker does not make it unready: it shows on the page and in the metrics.
func (h *health) notReady(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var why []string
	if _, _, err := h.db.NextDue(ctx); err != nil {
		why = append(why, fmt.Sprintf("ledger: %v", err))
	}
	switch nc := h.nc.Load(); {
	case nc == nil:
		why = append(why, "nats: not connected yet")
	case nc.Status() != nats.CONNECTED:
		why = append(why, "nats: "+nc.Status().String())
	}
	switch c := h.consumer.Load(); {
	case c == nil:
		why = append(why, "consumer: not bound yet")
	default:
		if _, err := (*c).Info(ctx); err != nil {
			why = append(why, fmt.Sprintf("consumer: %v", err))
		}
	}
	if !h.running.Load() {
		why = append(why, "pipeline: not running")
	}
	if p := h.pipe.Load(); p != nil {
		for _, s := range p.Runtime().Stuck {
			why = append(why, fmt.Sprintf("pipeline: stage %s stuck on one piece of work for %s (its goroutine dump is in the log)", s.Stage, s.For.Round(time.Second)))
		}
	}
	if p := h.lite.Load(); p != nil {
		select {
		case <-p.Done():
			why = append(why, "replica: litestream exited, the ledger is not replicated (see the log)")
		default:
		}
	}
	return why
}

// runtime is the live part of the status page, readiness aside.
func (h *health) runtime(ctx context.Context) ops.Runtime {
	rt := h.static
	rt.Started = h.started
	if nc := h.nc.Load(); nc != nil {
		rt.NATSURL = nc.ConnectedUrlRedacted()
	}
	if p := h.pipe.Load(); p != nil {
		r := p.Runtime()
		rt.InFlight = r.InFlight
		for _, b := range r.Breakers {
			rt.Breakers = append(rt.Breakers, ops.Breaker{Name: b.Name, State: b.State})
		}
	}
	if c := h.consumer.Load(); c != nil {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := (*c).Info(ictx)
		cancel()
		if err != nil {
			rt.ConsumerErr = err.Error()
		} else {
			rt.ConsumerPending, rt.ConsumerAckPending = info.NumPending, uint64(info.NumAckPending)
		}
	}
	if s := h.silent.Load(); s != nil {
		rt.Silent = *s
	}
	return rt // Ready and NotReady: ops.Handler fills them from notReady
}

// admin carries out the page's money-moving actions through the pipeline's own paths: a retry
// makes the batch due now (same number, same body); a cancel is published as an upstream
// cancel would be, so it is decided, done and answered exactly as one.
type admin struct {
	h      *health
	cancel atomic.Pointer[payout.Publisher] // set once JetStream is up; the listener serves before
	mchID  string
	now    func() time.Time
}

func (a *admin) RetryBatch(ctx context.Context, outBatchNo string) error {
	if err := a.h.db.RetryNow(ctx, outBatchNo, "status page", a.now()); err != nil {
		return err
	}
	if p := a.h.pipe.Load(); p != nil {
		p.Wake()
	}
	return nil
}

func (a *admin) CancelPayout(ctx context.Context, outDetailNo, reason string) error {
	pub := a.cancel.Load()
	if pub == nil {
		return errNotConnected
	}
	return pub.Cancel(ctx, payout.CancelRequest{OutDetailNo: outDetailNo, MchID: a.mchID, Reason: reason})
}

// errNotConnected refuses an action that needs JetStream before the replica reached it.
var errNotConnected = errors.New("not connected to JetStream yet: try again once /readyz answers 200")

// serveHTTP serves handler on listen (name is for errors and logs); the returned stop shuts
// it down, waiting up to 5 s for the requests in flight.
func serveHTTP(name, listen string, handler http.Handler, log *slog.Logger) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("%s listen: %w", name, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// opsHandler is the operator's handler: the status page, /status.json, /livez, /readyz and
// /metrics; admin actions only with a token.
func opsHandler(cfg HTTPConfig, h *health, m *metrics.Metrics, adm *admin, log *slog.Logger) http.Handler {
	c := ops.Config{
		Ledger: h.db, Runtime: h.runtime, Ready: h.notReady, Metrics: m.Handler(), Action: pipeline.ParkedAction, Log: log,
	}
	if cfg.AdminToken != "" {
		c.Admin, c.AdminToken = adm, cfg.AdminToken
	}
	return ops.Handler(c)
}
