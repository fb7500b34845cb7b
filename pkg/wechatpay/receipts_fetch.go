package wechatpay

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults of FetchReceipt.
const (
	// DefaultReceiptPoll is the wait between receipt queries: WeChat Pay advises no less than two
	// minutes (docs/receipts.md §3).
	DefaultReceiptPoll = 2 * time.Minute
	// DefaultReceiptQueries bounds the queries FetchReceipt makes with a nil wait: about half an
	// hour at DefaultReceiptPoll.
	DefaultReceiptQueries = 15
	// receiptDownloads bounds the download attempts of one fetch, each with a fresh URL from a new
	// query (a download_url lives ten minutes, docs/receipts.md §4).
	receiptDownloads = 3
)

// ReceiptWait paces FetchReceipt: it is called before each query that follows a "still
// generating" answer, with the number of such answers so far (1, 2, …), and returns when the next
// query may be sent, or an error to stop with (ErrReceiptPending when its budget is spent, or the
// context's error).
type ReceiptWait func(ctx context.Context, pending int) error

// PollEvery returns a ReceiptWait that waits interval (in a select on ctx.Done, never a sleep)
// before each of at most queries further queries, then gives up with ErrReceiptPending.
func PollEvery(interval time.Duration, queries int) ReceiptWait {
	return func(ctx context.Context, pending int) error {
		if pending > queries {
			return fmt.Errorf("%w after %d queries", ErrReceiptPending, queries)
		}
		t := time.NewTimer(interval)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrReceiptPending, ctx.Err())
		case <-t.C:
			return nil
		}
	}
}

// FetchReceipt gets the receipt of ref as PDF bytes (docs/receipts.md §6): it applies (an
// ALREADY_EXISTS answer means it was applied for before: it queries instead), queries until the
// receipt is generated, pacing the queries with wait (nil: PollEvery(DefaultReceiptPoll,
// DefaultReceiptQueries)), downloads the file and checks its SHA256 (DownloadReceipt). A failed
// download queries again for a fresh URL, up to three downloads in all. It is bounded by ctx and
// wait; it sends nothing that moves money.
//
// Errors: a *ReceiptRefusal (errors.Is ErrReceiptRefused) when WeChat Pay answers that no receipt
// can exist; ErrReceiptFailed when generation failed; ErrReceiptPending when wait gave up;
// ErrReceiptHash when the file is not the one described; otherwise the client's errors (Classify).
func FetchReceipt(ctx context.Context, c *Client, ref ReceiptRef, wait ReceiptWait) ([]byte, error) {
	if err := ref.validate(); err != nil {
		return nil, err
	}
	if wait == nil {
		wait = PollEvery(DefaultReceiptPoll, DefaultReceiptQueries)
	}
	api := receiptAPI(c, ref)
	st, err := api.apply(ctx)
	if errors.Is(err, ErrAlreadyExists) {
		st, err = api.query(ctx)
	}
	if err != nil {
		return nil, refusal(ref, err)
	}
	pending, downloads := 0, 0
	for {
		switch st.state {
		case receiptFailed:
			return nil, fmt.Errorf("receipt for %s: %w: %s", ref, ErrReceiptFailed, st.failReason)
		case receiptReady:
			downloads++
			pdf, err := c.DownloadReceipt(ctx, st.file)
			if err == nil || errors.Is(err, ErrReceiptHash) || downloads == receiptDownloads || ctx.Err() != nil {
				if err != nil {
					return nil, fmt.Errorf("receipt for %s: %w", ref, err)
				}
				return pdf, nil
			}
		default:
			pending++
			if err := wait(ctx, pending); err != nil {
				return nil, fmt.Errorf("receipt for %s: %w", ref, err)
			}
		}
		if st, err = api.query(ctx); err != nil {
			return nil, fmt.Errorf("receipt for %s: query: %w", ref, err)
		}
	}
}

// Where a receipt stands, whatever its rail calls it.
const (
	receiptGenerating = iota
	receiptReady
	receiptFailed
)

type receiptStatus struct {
	state      int
	file       ReceiptFile
	failReason string
}

// receiptCalls are the apply and query of one rail, answering receiptStatus.
type receiptCalls struct {
	apply, query func(ctx context.Context) (receiptStatus, error)
}

func receiptAPI(c *Client, ref ReceiptRef) receiptCalls {
	signature := func(status string, f ReceiptFile) receiptStatus {
		if status == SignatureFinished {
			return receiptStatus{state: receiptReady, file: f}
		}
		return receiptStatus{state: receiptGenerating}
	}
	switch {
	case ref.Rail == ReceiptRailBill:
		bill := func(r *BillReceipt, err error) (receiptStatus, error) {
			if err != nil {
				return receiptStatus{}, err
			}
			switch r.State {
			case ElecsignFinished:
				return receiptStatus{state: receiptReady, file: r.ReceiptFile}, nil
			case ElecsignFailed:
				return receiptStatus{state: receiptFailed, failReason: r.FailReason}, nil
			}
			return receiptStatus{state: receiptGenerating}, nil
		}
		return receiptCalls{
			apply: func(ctx context.Context) (receiptStatus, error) { return bill(c.ApplyBillReceipt(ctx, ref.OutBillNo)) },
			query: func(ctx context.Context) (receiptStatus, error) { return bill(c.QueryBillReceipt(ctx, ref.OutBillNo)) },
		}
	case ref.OutDetailNo != "":
		detail := func(r *DetailReceipt, err error) (receiptStatus, error) {
			if err != nil {
				return receiptStatus{}, err
			}
			return signature(r.SignatureStatus, r.ReceiptFile), nil
		}
		return receiptCalls{
			apply: func(ctx context.Context) (receiptStatus, error) {
				return detail(c.ApplyDetailReceipt(ctx, ref.OutBatchNo, ref.OutDetailNo))
			},
			query: func(ctx context.Context) (receiptStatus, error) {
				return detail(c.QueryDetailReceipt(ctx, ref.OutBatchNo, ref.OutDetailNo))
			},
		}
	}
	batch := func(r *BatchReceipt, err error) (receiptStatus, error) {
		if err != nil {
			return receiptStatus{}, err
		}
		return signature(r.SignatureStatus, r.ReceiptFile), nil
	}
	return receiptCalls{
		apply: func(ctx context.Context) (receiptStatus, error) {
			return batch(c.ApplyBatchReceipt(ctx, ref.OutBatchNo))
		},
		query: func(ctx context.Context) (receiptStatus, error) {
			return batch(c.QueryBatchReceipt(ctx, ref.OutBatchNo))
		},
	}
}

// refusal turns an application's answer into a *ReceiptRefusal when it is one of the codes the
// receipt APIs give for an unmet precondition (docs/receipts.md §5), and wraps it otherwise.
func refusal(ref ReceiptRef, err error) error {
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode >= 500 {
		return fmt.Errorf("receipt for %s: apply: %w", ref, err)
	}
	var reason string
	switch ae.Code {
	case "NOT_FOUND":
		reason = "WeChat Pay knows no such transfer"
	case "INVALID_REQUEST", "PARAM_ERROR":
		switch {
		case ref.Rail == ReceiptRailBill:
			reason = "WeChat Pay makes a receipt only for a bill in SUCCESS that was sent with the payee's real name (user_name), within six months"
		case ref.OutDetailNo != "":
			reason = "WeChat Pay makes a receipt only for a detail that succeeded and was sent with the payee's real name (user_name), within its age limit"
		default:
			reason = "WeChat Pay makes a batch receipt only for a FINISHED batch with at least one successful detail, sent with the payees' real names (user_name), within its age limit"
		}
	default:
		return fmt.Errorf("receipt for %s: apply: %w", ref, err)
	}
	return &ReceiptRefusal{Ref: ref, Reason: reason, Err: err}
}
