// Package batching groups recorded payout requests into WeChat Pay transfer batches.
//
// It is pure: no I/O, no goroutines, no clock. The caller (the pipeline) records each request
// in the ledger, gets its durable sequence number, and feeds it to a Batcher with Add; it
// runs its own timer on NextDue and calls Due when it fires, and Flush at shutdown. Every
// sealed Batch must be committed to the ledger (number and members, atomically) before its
// first submit attempt.
//
// Guarantees, for any input: each added Item is in exactly one sealed Batch (after Flush); a batch
// holds one group key only and at most its rail's cap (never above 3000, docs/wechatpay.md §4, §7);
// totals are computed from the items; out_batch_no is derived from the instance id and the first
// item's sequence, so it never repeats while sequences don't.
package batching

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Defaults for Config.
const (
	DefaultMaxWait = 10 * time.Second
	// MaxInstanceIDLen leaves room in the 32-character out_batch_no for "B" and 19 digits.
	MaxInstanceIDLen = 12
	// MaxDetailsBills is the most members of a batch on the bills rail. WeChat never sees such a
	// batch (each member is its own bill, docs/transfer-bills.md); it is the processor's unit of
	// sealing, audit and rate budgeting, capped like a direct batch (the ledger's MaxDetailsBills).
	MaxDetailsBills = 1000
)

// Item is one recorded payout request as the batcher sees it.
type Item struct {
	Seq         int64     // ledger sequence: durable, unique, positive
	OutDetailNo string    // the request's idempotency key
	Amount      int64     // fen, > 0
	Group       string    // GroupKey of the request
	Rail        string    // payout.RailDirect, payout.RailPartner or payout.RailBills
	At          time.Time // when the request was received (starts its wait)
}

// Batch is a sealed group of items to be paid under one out_batch_no.
type Batch struct {
	OutBatchNo string
	Group      string
	Rail       string
	Items      []Item
}

// TotalAmount is the sum of the items' amounts in fen (docs/wechatpay.md §4 total_amount).
func (b Batch) TotalAmount() int64 {
	var t int64
	for _, it := range b.Items {
		t += it.Amount
	}
	return t
}

// TotalNum is the number of items (docs/wechatpay.md §4 total_num).
func (b Batch) TotalNum() int { return len(b.Items) }

// Config configures a Batcher.
type Config struct {
	// InstanceID distinguishes processors (and ledgers) sharing one merchant: [0-9A-Za-z],
	// 1–12 characters. It must never be reused with a fresh ledger, or out_batch_no repeats.
	InstanceID string
	// CapDirect and CapPartner are the most details per batch on each rail: 1–1000 direct
	// (docs/wechatpay.md §4) and 1–3000 partner (docs/wechatpay.md §6), as CheckCap checks.
	// Zero means the API maximum.
	CapDirect, CapPartner int
	// CapBills is the most members per batch on the bills rail: 1–MaxDetailsBills (CheckCap).
	// Zero means MaxDetailsBills.
	CapBills int
	// MaxWait is how long the oldest item of a group may wait before its batch is sealed by
	// Due. Zero means DefaultMaxWait.
	MaxWait time.Duration
	// MaxBatchAmount, when positive, seals a batch before an item would take its total above
	// it. An item larger than MaxBatchAmount on its own gets a batch of its own.
	MaxBatchAmount int64
}

// ErrConfig matches every error from New.
var ErrConfig = errors.New("batching: invalid config")

// Batcher holds the open (unsealed) groups. It is not safe for concurrent use: the pipeline
// calls it from one goroutine.
type Batcher struct {
	cfg  Config
	open map[string]*group
	n    int // items in open groups
}

type group struct {
	rail   string
	items  []Item
	total  int64
	oldest time.Time
}

// New validates cfg, applies defaults and returns an empty Batcher.
func New(cfg Config) (*Batcher, error) {
	if cfg.CapDirect == 0 {
		cfg.CapDirect = wechatpay.MaxDetailsDirect
	}
	if cfg.CapPartner == 0 {
		cfg.CapPartner = wechatpay.MaxDetailsPartner
	}
	if cfg.CapBills == 0 {
		cfg.CapBills = MaxDetailsBills
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if len(cfg.InstanceID) > MaxInstanceIDLen || !payout.ValidNo(cfg.InstanceID) {
		return nil, fmt.Errorf("%w: instance id must be [0-9A-Za-z]{1,%d}", ErrConfig, MaxInstanceIDLen)
	}
	for _, c := range []struct {
		rail string
		n    int
	}{{payout.RailDirect, cfg.CapDirect}, {payout.RailPartner, cfg.CapPartner}, {payout.RailBills, cfg.CapBills}} {
		if err := CheckCap(c.rail, c.n); err != nil {
			return nil, fmt.Errorf("%w: %s cap %d %w", ErrConfig, c.rail, c.n, err)
		}
	}
	switch {
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("%w: negative max wait", ErrConfig)
	case cfg.MaxBatchAmount < 0:
		return nil, fmt.Errorf("%w: negative max batch amount", ErrConfig)
	}
	return &Batcher{cfg: cfg, open: make(map[string]*group)}, nil
}

// MaxCap is the largest batch cap rail allows: wechatpay.MaxDetailsDirect on payout.RailDirect
// (docs/wechatpay.md §4), wechatpay.MaxDetailsPartner on payout.RailPartner (docs/wechatpay.md
// §6) and MaxDetailsBills on payout.RailBills; 0 for any other rail.
func MaxCap(rail string) int {
	switch rail {
	case payout.RailDirect:
		return wechatpay.MaxDetailsDirect
	case payout.RailPartner:
		return wechatpay.MaxDetailsPartner
	case payout.RailBills:
		return MaxDetailsBills
	}
	return 0
}

// CheckCap is the one rule for a batch cap: n must be 1..MaxCap(rail). It returns nil or an
// error that states the range and its source ("outside 1..1000 (docs/wechatpay.md §4)"), to
// follow the name and value of the setting: New wraps it in ErrConfig, and the processor's
// configuration names the key (pipeline.batching.cap-direct). An unknown rail is an error.
// Zero is out of range here; only New reads it as "the maximum".
func CheckCap(rail string, n int) error {
	limit := MaxCap(rail)
	if limit == 0 {
		return fmt.Errorf("unknown rail %q", rail)
	}
	if n >= 1 && n <= limit {
		return nil
	}
	switch rail {
	case payout.RailDirect:
		return fmt.Errorf("outside 1..%d (docs/wechatpay.md §4)", limit)
	case payout.RailPartner:
		return fmt.Errorf("outside 1..%d (docs/wechatpay.md §6)", limit)
	}
	return fmt.Errorf("outside 1..%d", limit)
}

// Cap returns the batch cap for rail; an unknown rail gets the smallest cap configured.
func (b *Batcher) Cap(rail string) int {
	switch rail {
	case payout.RailPartner:
		return b.cfg.CapPartner
	case payout.RailDirect:
		return b.cfg.CapDirect
	case payout.RailBills:
		return b.cfg.CapBills
	}
	return min(b.cfg.CapDirect, b.cfg.CapPartner, b.cfg.CapBills)
}

// Add puts it into its group's open batch and returns the batches sealed by this call: the
// group's batch when it is full, or the previous batch when it would exceed MaxBatchAmount.
// Items are kept in the order added.
func (b *Batcher) Add(it Item) []Batch {
	var sealed []Batch
	g := b.open[it.Group]
	if g != nil && b.overAmount(g, it.Amount) {
		sealed = append(sealed, b.seal(it.Group, g))
		g = nil
	}
	if g == nil {
		g = &group{rail: it.Rail, oldest: it.At}
		b.open[it.Group] = g
	}
	g.items = append(g.items, it)
	g.total += it.Amount
	if it.At.Before(g.oldest) {
		g.oldest = it.At
	}
	b.n++
	if len(g.items) >= b.Cap(g.rail) {
		sealed = append(sealed, b.seal(it.Group, g))
	}
	return sealed
}

// overAmount reports whether adding amount to g would exceed MaxBatchAmount (or int64).
func (b *Batcher) overAmount(g *group, amount int64) bool {
	if amount > 0 && g.total > math.MaxInt64-amount {
		return true
	}
	return b.cfg.MaxBatchAmount > 0 && g.total+amount > b.cfg.MaxBatchAmount
}

// Due seals every group whose oldest item has waited at least MaxWait at now, in order of
// their first sequence.
func (b *Batcher) Due(now time.Time) []Batch {
	return b.sealWhere(func(g *group) bool { return !now.Before(g.oldest.Add(b.cfg.MaxWait)) })
}

// Flush seals every open group, in order of their first sequence.
func (b *Batcher) Flush() []Batch {
	return b.sealWhere(func(*group) bool { return true })
}

// NextDue returns when the earliest open group becomes due; false when nothing is open.
func (b *Batcher) NextDue() (time.Time, bool) {
	var next time.Time
	for _, g := range b.open {
		if d := g.oldest.Add(b.cfg.MaxWait); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next, len(b.open) > 0
}

// Len returns the number of items in open (unsealed) groups.
func (b *Batcher) Len() int { return b.n }

func (b *Batcher) sealWhere(pred func(*group) bool) []Batch {
	var sealed []Batch
	for key, g := range b.open {
		if pred(g) {
			sealed = append(sealed, b.seal(key, g))
		}
	}
	slices.SortFunc(sealed, func(x, y Batch) int { return cmp.Compare(x.Items[0].Seq, y.Items[0].Seq) })
	return sealed
}

func (b *Batcher) seal(key string, g *group) Batch {
	delete(b.open, key)
	b.n -= len(g.items)
	return Batch{
		OutBatchNo: OutBatchNo(b.cfg.InstanceID, g.items[0].Seq),
		Group:      key,
		Rail:       g.rail,
		Items:      g.items,
	}
}

// OutBatchNo returns "B" + instanceID + firstSeq zero-padded to 19 digits: [0-9A-Za-z], at most 32
// characters for an instance id of at most 12 (docs/wechatpay.md §4). Because the sequence part has
// a fixed width, distinct (instanceID, firstSeq) pairs give distinct numbers. firstSeq must be
// positive.
func OutBatchNo(instanceID string, firstSeq int64) string {
	const width = 19
	s := strconv.FormatInt(firstSeq, 10)
	buf := make([]byte, 0, 1+len(instanceID)+width)
	buf = append(buf, 'B')
	buf = append(buf, instanceID...)
	for range width - len(s) {
		buf = append(buf, '0')
	}
	return string(append(buf, s...))
}
