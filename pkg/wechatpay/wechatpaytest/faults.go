package wechatpaytest

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

type faultKind int

const (
	faultNone faultKind = iota
	faultLatency
	faultSystemError
	faultFrequencyLimited
	faultNotFound
	faultDropBeforeCommit
	faultDropAfterCommit
	faultTruncate
	faultUnsigned
	faultBadSignature
)

var faultNames = map[faultKind]string{
	faultLatency:          "latency",
	faultSystemError:      "system_error",
	faultFrequencyLimited: "frequency_limited",
	faultNotFound:         "not_found",
	faultDropBeforeCommit: "drop_before_commit",
	faultDropAfterCommit:  "drop_after_commit",
	faultTruncate:         "truncate",
	faultUnsigned:         "unsigned",
	faultBadSignature:     "bad_signature",
}

// Fault is one injected misbehaviour of one call. Faults that act "after commit" run the
// endpoint for real first (the batch is created, the query answered) and then spoil the
// answer, so the client cannot tell what happened: the "maybe paid" cases of docs/wechatpay.md §11.
type Fault struct {
	kind  faultKind
	delay time.Duration
}

// The faults. Latency is built with Latency(d).
var (
	// SystemError answers 500 SYSTEM_ERROR without running the endpoint.
	SystemError = Fault{kind: faultSystemError}
	// FrequencyLimited answers 429 FREQUENCY_LIMITED without running the endpoint.
	FrequencyLimited = Fault{kind: faultFrequencyLimited}
	// NotFound answers 404 NOT_FOUND without running the endpoint (docs/wechatpay.md §5).
	NotFound = Fault{kind: faultNotFound}
	// DropBeforeCommit resets the connection without running the endpoint.
	DropBeforeCommit = Fault{kind: faultDropBeforeCommit}
	// DropAfterCommit runs the endpoint (a create is committed), then resets the connection
	// before any byte of the answer: the client sees a reset or EOF.
	DropAfterCommit = Fault{kind: faultDropAfterCommit}
	// Truncate runs the endpoint, then sends the signed headers and half of the body and
	// closes the connection.
	Truncate = Fault{kind: faultTruncate}
	// Unsigned runs the endpoint and answers without Wechatpay-Signature headers.
	Unsigned = Fault{kind: faultUnsigned}
	// BadSignature runs the endpoint and answers with a signature over other bytes.
	BadSignature = Fault{kind: faultBadSignature}
)

// Latency delays the call by d (not scaled by Speed), then serves it normally. A latency
// fault combines with one other fault on the same call.
func Latency(d time.Duration) Fault { return Fault{kind: faultLatency, delay: d} }

// String is the fault's name as ParseFault reads it: "drop_after_commit", "latency:150ms".
func (f Fault) String() string {
	if f.kind == faultLatency {
		return "latency:" + f.delay.String()
	}
	if n, ok := faultNames[f.kind]; ok {
		return n
	}
	return "none"
}

// name is the counter key: the fault name without its parameter.
func (f Fault) name() string { return faultNames[f.kind] }

// ParseFault reads a fault name as String writes it.
func ParseFault(s string) (Fault, error) {
	if d, ok := strings.CutPrefix(s, "latency:"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil || dur < 0 {
			return Fault{}, fmt.Errorf("fault %q: bad duration", s)
		}
		return Latency(dur), nil
	}
	for k, n := range faultNames {
		if n == s && k != faultLatency {
			return Fault{kind: k}, nil
		}
	}
	return Fault{}, fmt.Errorf("fault %q: unknown (want one of system_error, frequency_limited, not_found, drop_before_commit, drop_after_commit, truncate, unsigned, bad_signature, latency:DURATION)", s)
}

// AnyEndpoint matches every endpoint in Fail, FailNext and FailRate.
const AnyEndpoint = "*"

// FaultRule injects Fault into calls of Endpoint (an Endpoint… constant or AnyEndpoint)
// with probability Rate, drawn from a generator seeded by Options.Seed.
type FaultRule struct {
	Endpoint string
	Fault    Fault
	Rate     float64
}

// faultTable holds scheduled and probabilistic faults. Guarded by Server.mu.
type faultTable struct {
	queued map[string][]Fault
	rules  []FaultRule
	rng    *rand.Rand
	counts map[string]int
}

// pick returns the latency and the fault for one call of endpoint, consuming queued faults
// first (the endpoint's own queue, then AnyEndpoint's) and then drawing against the rules.
func (t *faultTable) pick(endpoint string) (time.Duration, Fault) {
	var delay time.Duration
	var fault Fault
	take := func(f Fault) {
		switch {
		case f.kind == faultLatency && delay == 0:
			delay = f.delay
		case f.kind != faultLatency && fault.kind == faultNone:
			fault = f
		default:
			return
		}
		t.counts[f.name()]++
	}
	for _, key := range []string{endpoint, AnyEndpoint} {
		if q := t.queued[key]; len(q) > 0 {
			take(q[0])
			if len(q) == 1 {
				delete(t.queued, key)
			} else {
				t.queued[key] = q[1:]
			}
			break
		}
	}
	for _, r := range t.rules {
		if (r.Endpoint == endpoint || r.Endpoint == AnyEndpoint) && t.rng.Float64() < r.Rate {
			take(r.Fault)
		}
	}
	return delay, fault
}

// Fail queues faults for the next calls of endpoint, one call each, in order.
// Fail(EndpointCreateBatch, DropAfterCommit) spoils only the next create.
func (s *Server) Fail(endpoint string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.queued[endpoint] = append(s.faults.queued[endpoint], faults...)
}

// FailNext queues f for the next n calls of endpoint.
func (s *Server) FailNext(endpoint string, f Fault, n int) {
	for range n {
		s.Fail(endpoint, f)
	}
}

// FailRate injects f into each call of endpoint with probability rate (0..1), reproducibly
// for a given Options.Seed and call order. Rules add up; ClearFaults removes them.
func (s *Server) FailRate(endpoint string, f Fault, rate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.rules = append(s.faults.rules, FaultRule{Endpoint: endpoint, Fault: f, Rate: rate})
}

// ClearFaults removes every queued fault, every rule and every BillFault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.queued = map[string][]Fault{}
	s.faults.rules = nil
	s.flows.faults = nil
}
