package wechatpay

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1" // WeChat Pay's bill hash_type is SHA1 (docs/reconciliation.md §2): an integrity check, not a signature
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// pathFundFlowBill is the fund-flow bill application (docs/reconciliation.md §1).
const pathFundFlowBill = "/v3/bill/fundflowbill"

// pathBillDownload is where WeChat's download_url of a bill points (docs/reconciliation.md §2).
const pathBillDownload = "/v3/billdownload/file"

// logBytes is the log attribute of a downloaded file's size.
const logBytes = "bytes"

// MaxBillBytes caps a downloaded bill file, compressed and decompressed alike; a larger one is
// an error. A day of a million payouts is about 250 MB of CSV.
const MaxBillBytes = 1 << 30

// ApplyFundFlowBill applies for the fund-flow bill of one account and day
// (GET /v3/bill/fundflowbill, docs/reconciliation.md §1) and returns where to download it. The
// answer is verified like every API answer. A day's bill exists from about 10:00 the next day
// (China Standard Time): before that WeChat Pay answers 400 STATEMENT_CREATING; a day with no
// movement on the account answers 400 NO_STATEMENT_EXIST (docs/reconciliation.md §1). Both are
// *APIError values Classify calls ambiguous: ask again later, or accept that there is no bill.
// Download the file at once: download_url is valid for seconds to minutes.
func (c *Client) ApplyFundFlowBill(ctx context.Context, q FundFlowBillQuery) (*BillDownload, error) {
	if _, err := time.Parse(BillDateLayout, q.BillDate); err != nil {
		return nil, invalid("fund-flow bill: bill_date %q: want YYYY-MM-DD", q.BillDate)
	}
	switch q.AccountType {
	case AccountBasic, AccountOperation, AccountFees:
	default:
		return nil, invalid("fund-flow bill: account_type %q: want BASIC, OPERATION or FEES", q.AccountType)
	}
	v := url.Values{"bill_date": {q.BillDate}, "account_type": {q.AccountType}}
	switch q.TarType {
	case "":
	case TarGzip:
		v.Set("tar_type", TarGzip)
	default:
		return nil, invalid("fund-flow bill: tar_type %q: want empty or GZIP", q.TarType)
	}
	d, err := call[BillDownload](ctx, c, http.MethodGet, pathFundFlowBill+"?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	d.TarType = q.TarType
	return d, nil
}

// DownloadBill fetches the bill file d describes (docs/reconciliation.md §2) and returns its
// uncompressed bytes (the CSV ParseFundFlowBill reads).
//
// The request is signed like any API request, but WeChat Pay does not sign the file: instead
// the SHA1 of the uncompressed file must equal d.HashValue, or the error wraps ErrBillHash and
// no bytes are returned. The file is decompressed when d.TarType is TarGzip or the body is
// gzip. d.DownloadURL must be on the client's BaseURL or BackupBaseURL (same scheme and host):
// any other is refused before sending, with an error wrapping ErrForeignDownload and
// ErrNotSent, so the merchant's signature never reaches another host; redirects are not
// followed. A non-2xx answer is an *APIError. One attempt, bounded like every other by the
// context deadline or WithTimeout; there is no retry: on any error apply for a new URL.
func (c *Client) DownloadBill(ctx context.Context, d *BillDownload) ([]byte, error) {
	if d == nil {
		return nil, invalid("download bill: no download")
	}
	if !strings.EqualFold(d.HashType, HashSHA1) {
		return nil, invalid("download bill: hash_type %q: only SHA1 can be checked", d.HashType)
	}
	want, err := hex.DecodeString(d.HashValue)
	if err != nil || len(want) != sha1.Size {
		return nil, invalid("download bill: hash_value %q is not a SHA1", d.HashValue)
	}
	body, err := c.signedDownload(ctx, "download bill", d.DownloadURL, MaxBillBytes)
	if err != nil {
		return nil, err
	}
	if d.TarType == TarGzip || bytes.HasPrefix(body, gzipMagic) {
		if body, err = gunzip(body); err != nil {
			return nil, fmt.Errorf("download bill: %w", err)
		}
	}
	if got := sha1.Sum(body); !bytes.Equal(got[:], want) {
		return nil, fmt.Errorf("download bill: %w: SHA1 %x, hash_value %s", ErrBillHash, got, d.HashValue)
	}
	return body, nil
}

// downloadTarget splits a download_url into the configured base it is on and the request URI
// to sign, or refuses it.
func (c *Client) downloadTarget(raw string) (base, uri string, err error) {
	u, err := url.Parse(strings.TrimSpace(raw)) // the official example carries a leading blank
	if err != nil || u.User != nil || u.Fragment != "" {
		return "", "", invalid("download bill: download_url %q is not a plain URL", raw)
	}
	for _, b := range c.bases {
		bu, err := url.Parse(b)
		if err == nil && strings.EqualFold(bu.Scheme, u.Scheme) && strings.EqualFold(bu.Host, u.Host) {
			return b, u.RequestURI(), nil
		}
	}
	return "", "", fmt.Errorf("%w: %w: %w: scheme and host of %q", ErrNotSent, ErrBadInput, ErrForeignDownload, u.Scheme+"://"+u.Host)
}

// gzipMagic starts every gzip stream (RFC 1952); no CSV starts with it.
var gzipMagic = []byte{0x1f, 0x8b}

// gunzip decompresses b, refusing more than MaxBillBytes.
func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gunzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, MaxBillBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gunzip: %w", err)
	}
	if len(out) > MaxBillBytes {
		return nil, fmt.Errorf("gunzip: file exceeds %d bytes", MaxBillBytes)
	}
	return out, nil
}
