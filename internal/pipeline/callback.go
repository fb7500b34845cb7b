package pipeline

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// maxCallbackBody bounds what a notification may carry.
const maxCallbackBody = 64 << 10

// callbacks verifies and decrypts WeChat Pay batch notifications (spec §4) and feeds them to
// the ledger as hints: the batch's next query is brought forward, and poll and callback
// drive one monotonic state machine (spec §10 rule 9). It answers within the 5 s WeChat
// allows and does no network I/O of its own.
type callbacks struct {
	api  *wechatpay.Client
	db   *ledger.DB
	wake func()
	log  *slog.Logger
}

func (c *callbacks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, `{"code":"FAIL","message":"POST only"}`, http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCallbackBody+1))
	if err != nil || len(body) > maxCallbackBody {
		fail(w, http.StatusBadRequest, "unreadable body")
		return
	}
	n, err := c.api.ParseNotification(r.Header, body)
	if err != nil {
		c.log.Warn("callback refused", "err", err)
		fail(w, http.StatusUnauthorized, "verification failed")
		return
	}
	switch n.EventType {
	case wechatpay.EventBatchFinished, wechatpay.EventBatchClosed:
	default:
		w.WriteHeader(http.StatusNoContent) // not ours to act on; acknowledged so it is not retried
		return
	}
	plain, err := c.api.DecryptNotification(n)
	if err != nil {
		c.log.Warn("callback refused", "id", n.ID, "err", err)
		fail(w, http.StatusBadRequest, "decryption failed")
		return
	}
	var res wechatpay.BatchNotifyResource
	if err := json.Unmarshal(plain, &res); err != nil {
		fail(w, http.StatusBadRequest, "bad resource")
		return
	}
	err = c.db.ApplyCallback(r.Context(), n.ID, res.OutBatchNo, ledger.BatchStatus{
		BatchID: res.BatchID, Status: res.BatchStatus, CloseReason: res.CloseReason,
		SuccessAmount: int64(res.SuccessAmount), FailAmount: int64(res.FailAmount), SuccessNum: res.SuccessNum, FailNum: res.FailNum,
	})
	if err != nil {
		c.log.Warn("callback not applied", "id", n.ID, "out_batch_no", res.OutBatchNo, "err", err)
		fail(w, http.StatusInternalServerError, "not applied")
		return
	}
	c.wake()
	w.WriteHeader(http.StatusNoContent)
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"code": "FAIL", "message": msg})
}
