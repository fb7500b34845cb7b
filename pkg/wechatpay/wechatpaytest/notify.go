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

// notification is a callback waiting for delivery; plaintext is encrypted at each attempt.
type notification struct {
	url, event, summary string
	plaintext           []byte
}

// notifyAAD is the associated_data of every notification resource (spec §4 vectors).
const notifyAAD = "mch_payment"

// queueNotification builds a callback of spec §4; the background loop delivers it.
// Callers hold mu.
func (s *Server) queueNotification(url, event, summary string, resource any) {
	pt, err := json.Marshal(resource)
	if err != nil {
		s.log.Error("sandbox notification", "event", event, "err", err)
		return
	}
	s.outbox = append(s.outbox, notification{url: url, event: event, summary: summary, plaintext: pt})
}

// envelope encrypts n into a signed notification body (spec §4).
func (s *Server) envelope(n notification) ([]byte, error) {
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

// deliver POSTs n until a 2xx answer, at most NotifyAttempts times, waiting NotifyBackoff
// (scaled, doubling) between attempts. Close cancels it. The same notification id is
// redelivered, as WeChat does, so receivers must deduplicate on it.
func (s *Server) deliver(n notification) {
	defer s.bg.Done()
	body, err := s.envelope(n)
	if err != nil {
		s.log.Error("sandbox notification", "event", n.event, "err", err)
		return
	}
	wait := s.opts.scaled(s.opts.NotifyBackoff)
	for attempt := 1; ; attempt++ {
		err := s.post(n.url, body)
		if err == nil {
			s.mu.Lock()
			s.stats.Notified++
			s.mu.Unlock()
			s.log.Debug("sandbox notification delivered", "event", n.event, "attempt", attempt)
			return
		}
		s.mu.Lock()
		s.stats.NotifyFails++
		s.mu.Unlock()
		s.log.Info("sandbox notification failed", "event", n.event, "attempt", attempt, "err", err)
		if attempt >= s.opts.NotifyAttempts {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
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
