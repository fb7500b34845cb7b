package wechatpay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Paths of the receipt APIs (docs/receipts.md §1–§3).
const (
	pathBatchReceipt  = "/v3/transfer/bill-receipt"
	pathDetailReceipt = "/v3/transfer-detail/electronic-receipts"
	pathBillReceipt   = "/v3/fund-app/mch-transfer/elecsign/out-bill-no"
)

// MaxReceiptBytes caps a downloaded receipt file; a larger one is an error. A receipt is a
// one-page PDF of tens of kilobytes.
const MaxReceiptBytes = 16 << 20

// ApplyBatchReceipt applies for the receipt of a whole batch (POST /v3/transfer/bill-receipt,
// docs/receipts.md §1). WeChat Pay makes one only for a FINISHED batch with at least one
// successful detail, sent with real names, within its age limit; otherwise it answers 400
// INVALID_REQUEST (FetchReceipt turns that into a *ReceiptRefusal). The answer is usually
// SignatureAccepted: query until SignatureFinished.
func (c *Client) ApplyBatchReceipt(ctx context.Context, outBatchNo string) (*BatchReceipt, error) {
	if !outNo.MatchString(outBatchNo) {
		return nil, invalid("batch receipt: out_batch_no %q: want 1 to 32 characters of [0-9A-Za-z]", outBatchNo)
	}
	body, err := MarshalBody(struct {
		OutBatchNo string `json:"out_batch_no"`
	}{outBatchNo})
	if err != nil {
		return nil, err
	}
	return call[BatchReceipt](ctx, c, http.MethodPost, pathBatchReceipt, body)
}

// QueryBatchReceipt queries a batch receipt applied for with ApplyBatchReceipt
// (GET /v3/transfer/bill-receipt/{out_batch_no}, docs/receipts.md §1). Each FINISHED answer
// carries a fresh download_url, valid for ten minutes.
func (c *Client) QueryBatchReceipt(ctx context.Context, outBatchNo string) (*BatchReceipt, error) {
	no, err := segment("out_batch_no", outBatchNo)
	if err != nil {
		return nil, err
	}
	return call[BatchReceipt](ctx, c, http.MethodGet, pathBatchReceipt+"/"+no, nil)
}

// ApplyDetailReceipt applies for the receipt of one batch detail
// (POST /v3/transfer-detail/electronic-receipts, accept_type BATCH_TRANSFER, docs/receipts.md §2).
// WeChat Pay makes one only for a completed detail sent with the payee's real name; otherwise it
// answers 400 PARAM_ERROR.
func (c *Client) ApplyDetailReceipt(ctx context.Context, outBatchNo, outDetailNo string) (*DetailReceipt, error) {
	return postValidated[DetailReceipt](ctx, c, pathDetailReceipt,
		&DetailReceiptRequest{AcceptType: AcceptTypeBatchTransfer, OutBatchNo: outBatchNo, OutDetailNo: outDetailNo})
}

// QueryDetailReceipt queries a detail receipt (GET /v3/transfer-detail/electronic-receipts
// ?accept_type=BATCH_TRANSFER&out_batch_no=…&out_detail_no=…, docs/receipts.md §2).
func (c *Client) QueryDetailReceipt(ctx context.Context, outBatchNo, outDetailNo string) (*DetailReceipt, error) {
	r := DetailReceiptRequest{AcceptType: AcceptTypeBatchTransfer, OutBatchNo: outBatchNo, OutDetailNo: outDetailNo}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	q := url.Values{"accept_type": {r.AcceptType}, "out_batch_no": {r.OutBatchNo}, "out_detail_no": {r.OutDetailNo}}
	return call[DetailReceipt](ctx, c, http.MethodGet, pathDetailReceipt+"?"+q.Encode(), nil)
}

// ApplyBillReceipt applies for the receipt of a transfer bill
// (POST /v3/fund-app/mch-transfer/elecsign/out-bill-no, docs/receipts.md §3). WeChat Pay makes one
// only for a SUCCESS bill sent with the payee's real name, within six months; accepting the
// application does not promise the receipt: query until FINISHED or FAILED.
func (c *Client) ApplyBillReceipt(ctx context.Context, outBillNo string) (*BillReceipt, error) {
	if !outNo.MatchString(outBillNo) {
		return nil, invalid("bill receipt: out_bill_no %q: want 1 to 32 characters of [0-9A-Za-z]", outBillNo)
	}
	body, err := MarshalBody(struct {
		OutBillNo string `json:"out_bill_no"`
	}{outBillNo})
	if err != nil {
		return nil, err
	}
	return call[BillReceipt](ctx, c, http.MethodPost, pathBillReceipt, body)
}

// QueryBillReceipt queries a transfer bill's receipt
// (GET /v3/fund-app/mch-transfer/elecsign/out-bill-no/{out_bill_no}, docs/receipts.md §3). WeChat
// Pay advises at least two minutes between queries.
func (c *Client) QueryBillReceipt(ctx context.Context, outBillNo string) (*BillReceipt, error) {
	no, err := segment("out_bill_no", outBillNo)
	if err != nil {
		return nil, err
	}
	return call[BillReceipt](ctx, c, http.MethodGet, pathBillReceipt+"/"+no, nil)
}

// DownloadReceipt fetches the receipt file f describes (docs/receipts.md §4) and returns its bytes
// (a PDF). Like DownloadBill, the request is signed and the answer is not: the SHA256 of the file
// must equal f.HashValue (hex, either case), or the error wraps ErrReceiptHash and no bytes are
// returned. Only HashSHA256 can be checked; any other hash_type is refused before sending. The
// download_url must be on the client's BaseURL or BackupBaseURL (ErrForeignDownload), redirects
// are not followed, and a non-2xx answer is an *APIError. One attempt: on any error, query the
// receipt again for a fresh URL.
func (c *Client) DownloadReceipt(ctx context.Context, f ReceiptFile) ([]byte, error) {
	if !strings.EqualFold(f.HashType, HashSHA256) {
		return nil, invalid("download receipt: hash_type %q: only SHA256 can be checked", f.HashType)
	}
	want, err := hex.DecodeString(f.HashValue)
	if err != nil || len(want) != sha256.Size {
		return nil, invalid("download receipt: hash_value %q is not a SHA256", f.HashValue)
	}
	body, err := c.signedDownload(ctx, "download receipt", f.DownloadURL, MaxReceiptBytes)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(body); !bytes.Equal(got[:], want) {
		return nil, fmt.Errorf("download receipt: %w: SHA256 %x, hash_value %s", ErrReceiptHash, got, f.HashValue)
	}
	return body, nil
}

// signedDownload GETs rawURL, signed like an API request, and returns the unsigned answer's body
// of at most limit bytes. The URL must be on a configured base (downloadTarget); redirects are not
// followed; a non-2xx answer is an *APIError. what prefixes errors and names the log line.
//
// It is the transport half of DownloadBill as well (docs/reconciliation.md §2), which may be
// rebased on it.
func (c *Client) signedDownload(ctx context.Context, what, rawURL string, limit int64) ([]byte, error) {
	base, uri, err := c.downloadTarget(rawURL)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	auth, err := c.signer.Authorization(http.MethodGet, uri, c.now().Unix(), c.nonce(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	req, err := c.newRequest(ctx, http.MethodGet, base, uri, nil, auth)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "*/*")
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		c.observed(http.MethodGet, uri, 0, ClassAmbiguous, "", time.Since(start))
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	var code string
	switch {
	case err != nil:
		err = fmt.Errorf("%s: HTTP %d: read body: %w", what, resp.StatusCode, err)
	case int64(len(body)) > limit:
		err = fmt.Errorf("%s: HTTP %d: file exceeds %d bytes", what, resp.StatusCode, limit)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		ae := newAPIError(resp, body)
		code, err = ae.Code, fmt.Errorf("%s: %w", what, ae)
	}
	elapsed := time.Since(start)
	c.observed(http.MethodGet, uri, resp.StatusCode, Classify(err), code, elapsed)
	c.log.LogAttrs(ctx, slog.LevelDebug, "wechatpay: "+what,
		slog.String(logHost, req.URL.Host), slog.Int(logStatus, resp.StatusCode),
		slog.Int(logBytes, len(body)), slog.Duration(logElapsed, elapsed))
	if err != nil {
		return nil, err
	}
	return body, nil
}
