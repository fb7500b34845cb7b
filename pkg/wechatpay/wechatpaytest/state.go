package wechatpaytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// state is everything the sandbox remembers; SaveState writes it, LoadState reads it back.
// Guarded by Server.mu.
type state struct {
	Seq       uint64                   `json:"seq"`
	Unlimited bool                     `json:"unlimited"`
	Balance   wechatpay.Fen            `json:"balance"` // not yet debited
	Held      wechatpay.Fen            `json:"held"`    // reserved by unsettled details and bills
	Batches   []*batch                 `json:"batches"`
	Bills     []*bill                  `json:"bills"`
	Instrs    []*instr                 `json:"instructions"`
	Receipts  map[string]wechatpay.Fen `json:"receipts,omitempty"`
	Payments  []Payment                `json:"payments"`
}

func newState(balance wechatpay.Fen) state {
	return state{Unlimited: balance == Unlimited, Balance: balance}
}

// batchKey names a batch by its number; direct and partner numbers are separate spaces.
type batchKey struct {
	partner bool
	no      string
}

// indexes are derived from state and rebuilt by LoadState.
type indexes struct {
	byOut     map[batchKey]*batch
	byID      map[string]*batch
	byHash    map[string]*batch // by SHA-256 of the create body
	open      map[*batch]struct{}
	openBills map[*bill]struct{}
	bills     map[string]*bill // by out_bill_no
	billByNo  map[string]*bill // by transfer_bill_no
	instrs    map[string]*instr
}

func newIndexes() indexes {
	return indexes{
		byOut: map[batchKey]*batch{}, byID: map[string]*batch{}, byHash: map[string]*batch{}, open: map[*batch]struct{}{}, openBills: map[*bill]struct{}{},
		bills: map[string]*bill{}, billByNo: map[string]*bill{}, instrs: map[string]*instr{},
	}
}

func (x *indexes) addBatch(b *batch) {
	x.byOut[batchKey{b.Req.Partner, b.Req.OutBatchNo}] = b
	x.byID[b.ID] = b
	x.byHash[b.BodyHash] = b
	if b.Pending > 0 {
		x.open[b] = struct{}{}
	}
	b.index()
}

// Payment is one successful transfer in the sandbox's own record: a batch detail (Kind
// "batch" or "partner") or a transfer bill (Kind "bill", OutDetailNo = out_bill_no).
type Payment struct {
	Kind        string        `json:"kind"`
	OutBatchNo  string        `json:"out_batch_no,omitempty"`
	BatchID     string        `json:"batch_id,omitempty"`
	OutDetailNo string        `json:"out_detail_no"`
	DetailID    string        `json:"detail_id"`
	Amount      wechatpay.Fen `json:"amount"`
	PaidAt      time.Time     `json:"paid_at"`
}

// Payment kinds.
const (
	KindBatch   = "batch"
	KindPartner = "partner"
	KindBill    = "bill"
)

// Paid returns how many times each number was paid, settling whatever is due first: an
// out_detail_no of a batch (direct or partner) or an out_bill_no of a transfer bill (one
// SUCCESS per bill). A healthy run never shows a count above 1; the same number paid in
// two batches, or in a batch and as a bill, shows 2.
func (s *Server) Paid() map[string]int {
	return s.paidCounts(func(string) bool { return true })
}

// PaidBills is Paid for transfer bills only, keyed by out_bill_no.
func (s *Server) PaidBills() map[string]int {
	return s.paidCounts(func(k string) bool { return k == KindBill })
}

func (s *Server) paidCounts(keep func(kind string) bool) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.now())
	m := map[string]int{}
	for _, p := range s.st.Payments {
		if keep(p.Kind) {
			m[p.OutDetailNo]++
		}
	}
	return m
}

// Payments returns every payment in the order they were made, settling whatever is due first.
func (s *Server) Payments() []Payment {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.now())
	return append([]Payment(nil), s.st.Payments...)
}

// DoublePaid lists the numbers Paid counts more than once, sorted. Empty when nothing was
// paid twice.
func (s *Server) DoublePaid() []string {
	var out []string
	for no, n := range s.Paid() {
		if n > 1 {
			out = append(out, no)
		}
	}
	sort.Strings(out)
	return out
}

// Balance returns the merchant balance not yet debited and the part of it held by
// unsettled details. With an Unlimited balance both are meaningless and ok is false.
func (s *Server) Balance() (balance, held wechatpay.Fen, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.now())
	return s.st.Balance, s.st.Held, !s.st.Unlimited
}

// TopUp adds fen to a limited balance (a NOT_ENOUGH batch can then be retried with the
// same number). It does nothing to an Unlimited balance.
func (s *Server) TopUp(fen wechatpay.Fen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.st.Unlimited {
		s.st.Balance += fen
		s.version++
	}
}

// available is the balance a new create may hold.
func (st *state) available() wechatpay.Fen {
	if st.Unlimited {
		return Unlimited
	}
	return st.Balance - st.Held
}

// hold reserves fen for a new create, or reports false if the balance is too low.
func (st *state) hold(fen wechatpay.Fen) bool {
	if st.Unlimited {
		return true
	}
	if fen > st.available() {
		return false
	}
	st.Held += fen
	return true
}

// release ends a hold; paid debits the balance too. Each settled detail calls it once.
func (st *state) release(fen wechatpay.Fen, paid bool) {
	if st.Unlimited {
		return
	}
	st.Held -= fen
	if paid {
		st.Balance -= fen
	}
}

// Version counts changes to the state; cmd/sandbox saves when it moves.
func (s *Server) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.now())
	return s.version
}

// SaveState writes batches, bills, instructions, the balance and the payment record to
// path atomically (a temporary file in the same directory, fsynced, then renamed).
func (s *Server) SaveState(path string) error {
	s.mu.Lock()
	s.advance(s.now())
	b, err := json.Marshal(&s.st)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// LoadState replaces the sandbox's state with the one SaveState wrote to path. Faults,
// counters and rate windows are not part of the state. Call it before serving.
func (s *Server) LoadState(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("load state %s: %w", path, err)
	}
	x := newIndexes()
	for _, b := range st.Batches {
		if b == nil || len(b.Details) != len(b.Req.Details) {
			return fmt.Errorf("load state %s: corrupt batch", path)
		}
		x.addBatch(b)
	}
	for _, b := range st.Bills {
		x.bills[b.Req.OutBillNo] = b
		x.billByNo[b.No] = b
		if b.State == "" {
			x.openBills[b] = struct{}{}
		}
	}
	for _, in := range st.Instrs {
		x.instrs[in.key()] = in
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st, s.idx = st, x
	s.version++
	return nil
}
