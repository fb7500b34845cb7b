package wechatpaytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// notification is a callback waiting for delivery. Its body is built (encrypted, with its
// id) at the first attempt and sent again unchanged on retries.
type notification struct {
	url, event, summary string
	plaintext           []byte
	body                []byte
	at                  time.Time     // next delivery, on the sandbox clock
	wait                time.Duration // before the next retry; doubles
	attempts            int
}

// notifyAAD is the associated_data of every notification resource (docs/wechatpay.md §7 vectors).
const notifyAAD = "mch_payment"

// queueNotification builds a callback of docs/wechatpay.md §7 for the background loop: lost with
// probability NotifyLoss, else due NotifyDelay (scaled) from now. Callers hold mu.
func (s *Server) queueNotification(url, event, summary string, resource any) {
	pt, err := json.Marshal(resource)
	if err != nil {
		s.log.Error("sandbox notification", "event", event, "err", err)
		return
	}
	if s.opts.NotifyLoss > 0 && s.faults.rng.Float64() < s.opts.NotifyLoss {
		s.stats.NotifyLost++
		s.log.Debug("sandbox notification lost", "event", event)
		return
	}
	s.outbox = append(s.outbox, &notification{
		url: url, event: event, summary: summary, plaintext: pt,
		at: s.now().Add(s.opts.scaled(s.opts.NotifyDelay)), wait: s.opts.scaled(s.opts.NotifyBackoff),
	})
}

// envelope encrypts n into a signed notification body (docs/wechatpay.md §7).
func (s *Server) envelope(n *notification) ([]byte, error) {
	nonce := randomString(12)
	ct, err := wechatpay.EncryptAEAD(s.opts.APIv3Key, nonce, notifyAAD, n.plaintext)
	if err != nil {
		return nil, err
	}
	id := randomString(36)
	return json.Marshal(wechatpay.Notification{
		ID: id, CreateTime: rfc3339(s.now()), EventType: n.event, ResourceType: wechatpay.ResourceTypeEncrypt,
		Summary: n.summary,
		Resource: wechatpay.NotificationResource{
			OriginalType: "mch_payment", Algorithm: wechatpay.AlgorithmAEADAES256GCM,
			Ciphertext: ct, AssociatedData: notifyAAD, Nonce: nonce,
		},
	})
}

// deliver POSTs n once. A non-2xx answer or a failure queues it again NotifyBackoff
// (scaled, doubling) later on the sandbox clock, up to NotifyAttempts deliveries. Close
// cancels it. The same notification id is redelivered, as WeChat does, so receivers must
// deduplicate on it.
func (s *Server) deliver(n *notification) {
	defer s.bg.Done()
	if n.body == nil {
		body, err := s.envelope(n)
		if err != nil {
			s.log.Error("sandbox notification", "event", n.event, "err", err)
			return
		}
		n.body = body
	}
	n.attempts++
	err := s.post(n.url, n.body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.stats.Notified++
		s.log.Debug("sandbox notification delivered", "event", n.event, "attempt", n.attempts)
		return
	}
	s.stats.NotifyFails++
	s.log.Info("sandbox notification failed", "event", n.event, "attempt", n.attempts, "err", err)
	if n.attempts >= s.opts.NotifyAttempts || s.ctx.Err() != nil {
		return
	}
	n.at = s.now().Add(n.wait)
	n.wait *= 2
	s.outbox = append(s.outbox, n)
}

func (s *Server) post(url string, body []byte) error {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	s.sign(req.Header, body)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
