// Package abnormal pays in-transit abnormal funds (在途异常资金) back to their payees through
// WeChat Pay's transfer instructions (docs/abnormal-funds.md), by the rules of money
// (docs/money-rules.md): an instruction's out_instruction_no and exact body are committed in
// the ledger before the first send; an ambiguous answer resends that body under that number;
// 400 ALREADY_EXISTS is settled by querying the receipt; states only move forward; and a
// restart continues every instruction not final by its number (Resume).
//
// Instruct records and sends one instruction and follows it (by query) to its final state;
// ApplyCallback takes the ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS callback (the processor's
// callback listener routes it here). The functions are safe for concurrent use on different receipts.
package abnormal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/paystream/paystream/internal/backoff"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Client is the WeChat Pay seam: *wechatpay.Client satisfies it. Do sends one signed request
// with body as given (docs/wechatpay.md §11: the frozen bytes) and decodes a verified 2xx
// answer into out.
type Client interface {
	Do(ctx context.Context, method, pathAndQuery string, body []byte, out any) error
}

// Errors callers branch on.
var (
	// ErrRejected: WeChat definitely holds no instruction of this number (PARAM_ERROR, an
	// unknown receipt, or the receipt instructed under another number). The ledger records it
	// REJECTED; a new instruction for the receipt takes a new number.
	ErrRejected = errors.New("abnormal: instruction rejected")
	// ErrBlocked: a definite refusal an operator must fix (NO_AUTH, SIGN_ERROR, …). Nothing
	// was created; the instruction stays RECORDED and Resume sends it again under its number.
	ErrBlocked = errors.New("abnormal: instruction blocked")
	// ErrUnacknowledged: every send of this run was ambiguous. The instruction may exist at
	// WeChat; it stays RECORDED and Resume continues it under its number.
	ErrUnacknowledged = errors.New("abnormal: instruction not acknowledged")
	// ErrConflict: WeChat shows the receipt instructed under another number than the one it
	// acknowledged for us. Nothing is changed; a human must look.
	ErrConflict = errors.New("abnormal: WeChat shows another instruction")
)

// Defaults of the options.
const (
	DefaultAttempts   = 5                // sends per Send before ErrUnacknowledged
	DefaultMinBackoff = time.Second      // first wait after an ambiguous send
	DefaultMaxBackoff = 30 * time.Second // cap of that wait
	DefaultPoll       = 5 * time.Second  // the follow's query interval
)

// Option configures the functions of the package.
type Option func(*options)

type options struct {
	attempts         int
	minWait, maxWait time.Duration
	poll             time.Duration
	log              *slog.Logger
}

// WithAttempts bounds the sends of one Send (default DefaultAttempts, at least 1).
func WithAttempts(n int) Option { return func(o *options) { o.attempts = max(n, 1) } }

// WithBackoff sets the jittered, capped wait between ambiguous sends (default
// DefaultMinBackoff, DefaultMaxBackoff).
func WithBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) { o.minWait, o.maxWait = minWait, maxWait }
}

// WithPoll sets the follow's query interval (default DefaultPoll).
func WithPoll(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

func newOptions(opts []Option) *options {
	o := &options{attempts: DefaultAttempts, minWait: DefaultMinBackoff, maxWait: DefaultMaxBackoff, poll: DefaultPoll,
		log: slog.Default()}
	for _, f := range opts {
		f(o)
	}
	return o
}

// Log attribute keys.
const (
	logReceipt = "receipt_id"
	logNo      = "out_instruction_no"
	logState   = "receipt_state"
	logAttempt = "attempt"
	logError   = "error"
)

// NewInstructionNo returns a fresh out_instruction_no: "AF" and 24 random [0-9A-Za-z]
// (wechatpay.NewNonce), unique within a receipt beyond doubt (docs/abnormal-funds.md: string(64)).
func NewInstructionNo() string { return "AF" + wechatpay.NewNonce()[:24] }

// Instruct pays the abnormal-fund receipt receiptID back to its original payee, collectable
// in appids (1 to 5; docs/abnormal-funds.md), with the callback to notifyURL ("" for none):
// it records the instruction (a new number and its body, committed before the first send),
// then sends and follows it. If the receipt already has a live instruction in the ledger with the
// same request, that one is continued under its number; with another request the error wraps
// ledger.ErrInstructionLive. It returns the instruction as the ledger last recorded it, final
// unless the error says otherwise (ctx ended while following: still open, Resume continues).
func Instruct(ctx context.Context, db *ledger.Instructions, c Client, receiptID string, appids []string, notifyURL string, opts ...Option) (ledger.Instruction, error) {
	o := newOptions(opts)
	in, err := record(ctx, db, o, receiptID, appids, notifyURL)
	if err != nil {
		return in, err
	}
	return continueOne(ctx, db, c, in, o)
}

// record commits the instruction before its first send.
func record(ctx context.Context, db *ledger.Instructions, o *options, receiptID string, appids []string, notifyURL string) (ledger.Instruction, error) {
	req := wechatpay.CreateTransferInstructionRequest{OutInstructionNo: NewInstructionNo(), AppID: appids,
		TransferMode: wechatpay.TransferModeOriginalReceiveUser, NotifyURL: notifyURL}
	if err := req.Validate(); err != nil {
		return ledger.Instruction{}, fmt.Errorf("instruct receipt %s: %w", receiptID, err)
	}
	if receiptID == "" || len(receiptID) > 64 {
		return ledger.Instruction{}, fmt.Errorf("instruct: receipt_id %q: want 1 to 64 bytes: %w", receiptID, wechatpay.ErrBadInput)
	}
	body, err := wechatpay.MarshalBody(&req)
	if err != nil {
		return ledger.Instruction{}, err
	}
	in, created, err := db.Record(ctx, ledger.NewInstruction{ReceiptID: receiptID, OutInstructionNo: req.OutInstructionNo,
		AppIDs: appids, NotifyURL: notifyURL, Body: body})
	if err != nil {
		return in, err
	}
	if !created {
		o.log.InfoContext(ctx, "abnormal: continuing the receipt's recorded instruction",
			slog.String(logReceipt, in.ReceiptID), slog.String(logNo, in.OutInstructionNo), slog.String(logState, in.State))
	}
	return in, nil
}

// continueOne sends in if WeChat has not acknowledged it, then follows it to the end.
func continueOne(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, o *options) (ledger.Instruction, error) {
	var err error
	if in.State == ledger.InstrRecorded {
		if in, err = send(ctx, db, c, in, o); err != nil {
			return in, err
		}
	}
	return follow(ctx, db, c, in, o)
}

// Send sends in's recorded body under its number until WeChat acknowledges it (the ledger
// then holds WeChat's state and answer) and returns it. Every ambiguous answer (timeout,
// reset, 5xx, SYSTEM_ERROR, 429, an unknown code, an unverified 2xx: wechatpay.Classify)
// resends the same bytes after a backoff, up to the attempts; 400 ALREADY_EXISTS queries the
// receipt. Errors: ErrRejected, ErrBlocked, ErrUnacknowledged, ctx's, or the ledger's. An
// instruction WeChat already acknowledged is returned as it is.
func Send(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, opts ...Option) (ledger.Instruction, error) {
	if in.State != ledger.InstrRecorded {
		return in, nil
	}
	return send(ctx, db, c, in, newOptions(opts))
}

func send(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, o *options) (ledger.Instruction, error) {
	path := "/v3/abnormal-fund-processing/receipts/" + url.PathEscape(in.ReceiptID) + "/transfer-instructions"
	var ambiguous error
	for attempt := 1; ; attempt++ {
		var err error
		if in, err = db.Attempt(ctx, in.ID); err != nil { // counted before it goes out
			return in, err
		}
		var res wechatpay.TransferInstructionResponse
		err = c.Do(ctx, http.MethodPost, path, in.Body, &res)
		if err == nil && (res.Instruction == nil || res.Instruction.OutInstructionNo != in.OutInstructionNo) {
			err = fmt.Errorf("the answer names no instruction %s: %w", in.OutInstructionNo, wechatpay.ErrUnverified)
		}
		if err == nil {
			return db.Apply(ctx, in.ID, answer(&res))
		}
		if ferr := db.Fail(ctx, in.ID, err.Error()); ferr != nil {
			return in, errors.Join(err, ferr)
		}
		o.log.WarnContext(ctx, "abnormal: instruction send", slog.String(logReceipt, in.ReceiptID), slog.String(logNo, in.OutInstructionNo),
			slog.Int(logAttempt, in.Attempts), slog.String("class", wechatpay.Classify(err).String()), slog.String(logError, err.Error()))
		settled, done, serr := settle(ctx, db, c, in, err, in.Attempts > 1 || ambiguous != nil)
		if done {
			return settled, serr
		}
		ambiguous = err
		if ctx.Err() != nil {
			return in, fmt.Errorf("send instruction %s: %w (last: %w)", in.OutInstructionNo, ctx.Err(), err)
		}
		if attempt >= o.attempts {
			return in, fmt.Errorf("%w: instruction %s of receipt %s after %d sends: %w", ErrUnacknowledged, in.OutInstructionNo, in.ReceiptID, attempt, err)
		}
		t := time.NewTimer(backoff.Jittered(o.minWait, o.maxWait, attempt-1))
		select {
		case <-ctx.Done():
			t.Stop()
			return in, fmt.Errorf("send instruction %s: %w (last: %w)", in.OutInstructionNo, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// settle decides on the error of one send. done false: ambiguous, send again. maybeSent says
// an earlier send's answer was lost, so a refusal now proves nothing before the receipt is
// queried (docs/money-rules.md#ambiguous).
func settle(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, err error, maybeSent bool) (_ ledger.Instruction, done bool, _ error) {
	class := wechatpay.Classify(err)
	switch {
	case errors.Is(err, wechatpay.ErrAlreadyExists):
		// "当前在途异常资金付款单已在处理中或处理成功": the receipt is instructed; by whom, the
		// query says (docs/abnormal-funds.md).
		return byQuery(ctx, db, c, in, err)
	case class == wechatpay.ClassRejected || class == wechatpay.ClassNotFound:
		if maybeSent {
			return byQuery(ctx, db, c, in, err)
		}
		out, rerr := db.Reject(ctx, in.ID, err.Error())
		if rerr != nil {
			return out, true, rerr
		}
		return out, true, fmt.Errorf("%w: instruction %s of receipt %s: %w", ErrRejected, in.OutInstructionNo, in.ReceiptID, err)
	case class == wechatpay.ClassBlocked:
		return in, true, fmt.Errorf("%w: instruction %s of receipt %s: %w", ErrBlocked, in.OutInstructionNo, in.ReceiptID, err)
	}
	return in, false, nil // ambiguous, or not sent at all: the same bytes again
}

// byQuery settles a send by the receipt's query: ours there → applied; another number →
// rejected; no instruction, or no answer → not settled (send again).
func byQuery(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, cause error) (ledger.Instruction, bool, error) {
	res, err := Query(ctx, c, in.ReceiptID)
	switch {
	case err != nil:
		if ferr := db.Fail(ctx, in.ID, "query after "+cause.Error()+": "+err.Error()); ferr != nil {
			return in, true, ferr
		}
		if wechatpay.Classify(err) == wechatpay.ClassNotFound && !errors.Is(cause, wechatpay.ErrAlreadyExists) {
			// The receipt itself is unknown to WeChat, and the send was refused: nothing exists.
			return rejected(ctx, db, in, cause)
		}
		return in, false, nil
	case res.Instruction == nil:
		if errors.Is(cause, wechatpay.ErrAlreadyExists) || wechatpay.Classify(cause) == wechatpay.ClassAmbiguous {
			return in, false, nil // not visible yet (docs/money-rules.md#not-found)
		}
		return rejected(ctx, db, in, cause)
	case res.Instruction.OutInstructionNo != in.OutInstructionNo:
		return rejected(ctx, db, in, fmt.Errorf("the receipt is instructed under %s: %w", res.Instruction.OutInstructionNo, cause))
	}
	out, err := db.Apply(ctx, in.ID, answer(res))
	return out, true, err
}

func rejected(ctx context.Context, db *ledger.Instructions, in ledger.Instruction, cause error) (ledger.Instruction, bool, error) {
	out, err := db.Reject(ctx, in.ID, cause.Error())
	if err != nil {
		return out, true, err
	}
	return out, true, fmt.Errorf("%w: instruction %s of receipt %s: %w", ErrRejected, in.OutInstructionNo, in.ReceiptID, cause)
}

// Query asks WeChat for the receipt receiptID (GET /v3/abnormal-fund-processing/receipts/
// {receipt_id}, "查询在途异常资金付款结果",
// https://pay.weixin.qq.com/doc/v3/partner/4015408031): its amount, state and instruction, if
// any. Errors are the client's (a *wechatpay.APIError for an answer).
func Query(ctx context.Context, c Client, receiptID string) (*wechatpay.TransferInstructionResponse, error) {
	if receiptID == "" {
		return nil, fmt.Errorf("query receipt: empty receipt_id: %w", wechatpay.ErrBadInput)
	}
	var res wechatpay.TransferInstructionResponse
	if err := c.Do(ctx, http.MethodGet, "/v3/abnormal-fund-processing/receipts/"+url.PathEscape(receiptID), nil, &res); err != nil {
		return nil, fmt.Errorf("query receipt %s: %w", receiptID, err)
	}
	return &res, nil
}

// follow queries in's receipt every poll interval until the instruction is final, applying
// each answer to the ledger, and returns it. A query that fails, or that does not show the
// instruction yet, is recorded as the last error and asked again. Errors: ErrConflict (the
// receipt shows another number), ctx's (the instruction stays open), or the ledger's. A
// RECORDED instruction is not followed: Send it first.
func follow(ctx context.Context, db *ledger.Instructions, c Client, in ledger.Instruction, o *options) (ledger.Instruction, error) {
	if in.State == ledger.InstrRecorded {
		return in, fmt.Errorf("follow instruction %s: not acknowledged by WeChat: %w", in.OutInstructionNo, ErrUnacknowledged)
	}
	for !ledger.InstrFinal(in.State) {
		t := time.NewTimer(o.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return in, fmt.Errorf("follow instruction %s (%s): %w", in.OutInstructionNo, in.State, ctx.Err())
		case <-t.C:
		}
		res, err := Query(ctx, c, in.ReceiptID)
		switch {
		case err == nil && res.Instruction != nil && res.Instruction.OutInstructionNo != in.OutInstructionNo:
			return in, fmt.Errorf("%w: receipt %s: ours is %s (%s), WeChat shows %s", ErrConflict, in.ReceiptID, in.OutInstructionNo, in.State, res.Instruction.OutInstructionNo)
		case err == nil && res.Instruction == nil:
			err = errors.New("the receipt shows no instruction yet")
		}
		if err != nil {
			if ctx.Err() != nil {
				continue // ends at the select
			}
			o.log.WarnContext(ctx, "abnormal: instruction query", slog.String(logReceipt, in.ReceiptID), slog.String(logNo, in.OutInstructionNo), slog.String(logError, err.Error()))
			if ferr := db.Fail(ctx, in.ID, err.Error()); ferr != nil {
				return in, ferr
			}
			continue
		}
		prev := in.State
		if in, err = db.Apply(ctx, in.ID, answer(res)); err != nil {
			return in, err
		}
		if in.State != prev {
			o.log.InfoContext(ctx, "abnormal: instruction moved", slog.String(logReceipt, in.ReceiptID), slog.String(logNo, in.OutInstructionNo),
				slog.String("from", prev), slog.String(logState, in.State), slog.Int64("amount", in.Amount))
		}
	}
	return in, nil
}

// Resume continues every instruction the ledger holds open, oldest first, by its number:
// first every RECORDED one is sent again (its recorded bytes), then each is followed to its
// final state. Sending first keeps an instruction whose payee has not collected yet (followed
// for as long as ctx lasts) from holding back a later one that was never sent. It returns the
// instructions as last recorded; the error joins each one's failure (an instruction that
// failed stays open for the next Resume).
func Resume(ctx context.Context, db *ledger.Instructions, c Client, opts ...Option) ([]ledger.Instruction, error) {
	o := newOptions(opts)
	open, err := db.Open(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	failed := make([]bool, len(open))
	pass := func(sends bool) {
		for i, in := range open {
			if failed[i] || (sends && in.State != ledger.InstrRecorded) {
				continue
			}
			if err := ctx.Err(); err != nil {
				failed[i], errs = true, append(errs, fmt.Errorf("instruction %s: %w", in.OutInstructionNo, err))
				continue
			}
			step := follow
			if sends {
				step = send
			}
			var err error
			if open[i], err = step(ctx, db, c, in, o); err != nil {
				failed[i], errs = true, append(errs, err)
			}
		}
	}
	pass(true)
	pass(false)
	return open, errors.Join(errs...)
}

// ApplyCallback applies the resource of an ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS callback,
// verified and decrypted by wechatpay.Client.NotificationHandler, to the ledger's instruction
// it names, and returns that instruction. The error wraps ledger.ErrNotFound for an
// instruction not in this ledger, or is the decoding's or the ledger's. A callback is one
// more answer: states still only move forward, and a stale one changes nothing.
func ApplyCallback(ctx context.Context, db *ledger.Instructions, resource []byte) (ledger.Instruction, error) {
	var res wechatpay.TransferInstructionResponse
	if err := json.Unmarshal(resource, &res); err != nil {
		return ledger.Instruction{}, fmt.Errorf("abnormal-fund callback: %w", err)
	}
	if res.Instruction == nil {
		return ledger.Instruction{}, fmt.Errorf("abnormal-fund callback for receipt %s names no instruction: %w", res.ReceiptID, ledger.ErrNotFound)
	}
	in, err := db.Find(ctx, res.ReceiptID, res.Instruction.OutInstructionNo)
	if err != nil {
		return in, fmt.Errorf("abnormal-fund callback: %w", err)
	}
	return db.Apply(ctx, in.ID, answer(&res))
}

// answer is what the ledger keeps of a WeChat answer.
func answer(r *wechatpay.TransferInstructionResponse) ledger.InstructionAnswer {
	a := ledger.InstructionAnswer{ReceiptState: r.ReceiptState, Amount: int64(r.TransferAmount.Total), ProductName: r.ProductName,
		CreateTime: r.CreateTime, LastUpdateTime: r.LastUpdateTime}
	if r.Instruction != nil {
		a.SuccessTime = r.Instruction.SuccessTime
	}
	return a
}
