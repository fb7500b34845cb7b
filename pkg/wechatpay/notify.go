package wechatpay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

// ErrBadNotification marks a notification that verified but is not a well-formed
// encrypt-resource envelope, or whose resource is not the kind the caller asked for.
var ErrBadNotification = errors.New("wechatpay: bad notification")

// MaxNotificationBytes caps a notification body read by NotificationHandler.
const MaxNotificationBytes = 64 << 10

// ParseNotification verifies a callback's headers and raw body (docs/wechatpay.md §2, accepting the
// public key and platform certificates alike) and only then decodes the envelope (docs/wechatpay.md
// §7). A verification failure wraps ErrUnverified; answer it with a non-2xx so WeChat retries.
func (c *Client) ParseNotification(h http.Header, body []byte) (*Notification, error) {
	if err := c.verifier.verify(h, body); err != nil {
		return nil, fmt.Errorf("notification: %w", err)
	}
	var n Notification
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadNotification, err)
	}
	switch {
	case n.ID == "":
		return nil, fmt.Errorf("%w: no id", ErrBadNotification)
	case n.ResourceType != ResourceTypeEncrypt:
		return nil, fmt.Errorf("%w: %s: resource_type %q", ErrBadNotification, n.ID, n.ResourceType)
	case n.Resource.Algorithm != AlgorithmAEADAES256GCM:
		return nil, fmt.Errorf("%w: %s: algorithm %q", ErrBadNotification, n.ID, n.Resource.Algorithm)
	}
	return &n, nil
}

// Decrypt returns the plaintext resource (docs/wechatpay.md §7): AES-256-GCM with the APIv3 key,
// the resource nonce as IV and associated_data as AAD. The plaintext may hold openids: never log
// it.
func (n *Notification) Decrypt(apiv3Key string) ([]byte, error) {
	r := n.Resource
	pt, err := DecryptAEAD(apiv3Key, r.Nonce, r.AssociatedData, r.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("notification %s: %w", n.ID, err)
	}
	return pt, nil
}

// decodeResource decrypts n and decodes it into T after checking the event type.
func decodeResource[T any](n *Notification, apiv3Key string, events ...string) (*T, error) {
	ok := false
	for _, e := range events {
		ok = ok || n.EventType == e
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s: event_type %q, want one of %v", ErrBadNotification, n.ID, n.EventType, events)
	}
	pt, err := n.Decrypt(apiv3Key)
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(pt, &v); err != nil {
		return nil, fmt.Errorf("%w: %s: resource: %w", ErrBadNotification, n.ID, err)
	}
	return &v, nil
}

// BatchResource decrypts and decodes a MCHTRANSFER.BATCH.FINISHED or .CLOSED resource. It holds
// totals only: page the details with a query before moving the ledger (docs/wechatpay.md §7).
func (n *Notification) BatchResource(apiv3Key string) (*BatchFinishedResource, error) {
	return decodeResource[BatchFinishedResource](n, apiv3Key, EventBatchFinished, EventBatchClosed)
}

// BillResource decrypts and decodes a MCHTRANSFER.BILL.FINISHED resource.
func (n *Notification) BillResource(apiv3Key string) (*BillFinishedResource, error) {
	return decodeResource[BillFinishedResource](n, apiv3Key, EventBillFinished)
}

// InstructionResource decrypts and decodes an ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS
// resource (docs/abnormal-funds.md).
func (n *Notification) InstructionResource(apiv3Key string) (*TransferInstructionResponse, error) {
	return decodeResource[TransferInstructionResponse](n, apiv3Key, EventAbnormalFundSuccess)
}

// NotificationFunc handles one verified notification and its decrypted resource. It must return
// quickly (WeChat waits at most 5 s, docs/wechatpay.md §7): record or enqueue, then return. A
// non-nil error makes WeChat retry the notification later.
type NotificationFunc func(ctx context.Context, n *Notification, plaintext []byte) error

// NotificationHandler returns an http.Handler for notify_url: it reads at most
// MaxNotificationBytes, verifies, decrypts with Config.APIv3Key and calls fn. It answers
// 204 on success, and 4xx/5xx with {"code":"FAIL","message":…} otherwise, so WeChat
// retries (docs/wechatpay.md §7). Deduplicate on Notification.ID in fn: retries are normal.
func (c *Client) NotificationHandler(fn NotificationFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, err := c.serveNotification(r, fn)
		if err == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		c.log.LogAttrs(r.Context(), slog.LevelWarn, "wechatpay: notification refused",
			slog.Int(logStatus, status), slog.String(logError, err.Error()))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(APIError{Code: "FAIL", Message: http.StatusText(status)})
	})
}

func (c *Client) serveNotification(r *http.Request, fn NotificationFunc) (int, error) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, fmt.Errorf("method %s", r.Method)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxNotificationBytes+1))
	if err != nil {
		return http.StatusBadRequest, err
	}
	if len(body) > MaxNotificationBytes {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body exceeds %d bytes", MaxNotificationBytes)
	}
	n, err := c.ParseNotification(r.Header, body)
	if errors.Is(err, ErrUnverified) {
		return http.StatusUnauthorized, err
	}
	if err != nil {
		return http.StatusBadRequest, err
	}
	pt, err := n.Decrypt(c.apiv3Key)
	if err != nil {
		return http.StatusBadRequest, err
	}
	if err := fn(r.Context(), n, pt); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("notification %s: %w", n.ID, err)
	}
	return http.StatusOK, nil
}
