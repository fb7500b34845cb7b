package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// callbackHandler serves WeChat Pay batch notifications (spec §4). The client verifies and
// decrypts them; this feeds them to the ledger as hints: the status moves the batch's one
// monotonic state machine forward (a stale one changes nothing), a notification id seen
// before is a no-op, and the batch's next query is brought forward so its details are paged
// from a verified query (spec §10 rule 9). No network I/O happens inside the 5 s WeChat allows.
func callbackHandler(api *wechatpay.Client, db *ledger.DB, wake func()) http.Handler {
	return api.NotificationHandler(func(ctx context.Context, n *wechatpay.Notification, plaintext []byte) error {
		if n.EventType != wechatpay.EventBatchFinished && n.EventType != wechatpay.EventBatchClosed {
			return nil // not ours to act on; acknowledged so it is not retried
		}
		var res wechatpay.BatchFinishedResource
		if err := json.Unmarshal(plaintext, &res); err != nil {
			return fmt.Errorf("batch resource: %w", err)
		}
		err := db.ApplyCallback(ctx, n.ID, res.OutBatchNo, ledger.BatchStatus{
			BatchID: res.BatchID, Status: res.BatchStatus, CloseReason: res.CloseReason,
			SuccessAmount: int64(res.SuccessAmount), FailAmount: int64(res.FailAmount), SuccessNum: res.SuccessNum, FailNum: res.FailNum,
		})
		if err != nil {
			return err
		}
		wake()
		return nil
	})
}
