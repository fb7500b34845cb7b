package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/paystream/paystream/internal/abnormal"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// callbackHandler serves WeChat Pay notifications (docs/wechatpay.md §7) for both products. The
// client verifies and decrypts them; this feeds them to the ledger as hints: the state moves one
// monotonic state machine forward (a stale one changes nothing), a notification id seen before is a
// no-op. A batch's next query is brought forward so its details are paged from a verified query
// (docs/wechatpay.md §11); a bill's final state is applied as it comes, its amount and
// merchant checked against the ledger first. No network I/O happens inside the 5 s WeChat allows.
// applied is called with the out_batch_no of each applied notification (a batch it settled is
// reported there). An abnormal-fund instruction's result goes to instrs, the ledger's
// instruction table (internal/abnormal); one this ledger does not hold is answered 5xx, so
// WeChat tries again (another replica's ledger may hold it; the instruction's own follow
// queries it to the end anyway).
func callbackHandler(api *wechatpay.Client, db *ledger.DB, instrs *ledger.Instructions, wake func(), applied func(ctx context.Context, outBatchNo string)) http.Handler {
	return api.NotificationHandler(func(ctx context.Context, n *wechatpay.Notification, plaintext []byte) error {
		var err error
		var outBatchNo string
		switch n.EventType {
		case wechatpay.EventAbnormalFundSuccess:
			if instrs == nil {
				return errors.New("abnormal-fund callback: this processor keeps no instruction table")
			}
			_, err = abnormal.ApplyCallback(ctx, instrs, plaintext)
			return err
		case wechatpay.EventBatchFinished, wechatpay.EventBatchClosed:
			outBatchNo, err = batchCallback(ctx, db, n, plaintext)
		case wechatpay.EventBillFinished:
			outBatchNo, err = billCallback(ctx, db, n, plaintext)
		default:
			return nil // not ours to act on; acknowledged so it is not retried
		}
		if err != nil {
			return err
		}
		applied(ctx, outBatchNo)
		wake()
		return nil
	})
}

func batchCallback(ctx context.Context, db *ledger.DB, n *wechatpay.Notification, plaintext []byte) (string, error) {
	var res wechatpay.BatchFinishedResource
	if err := json.Unmarshal(plaintext, &res); err != nil {
		return "", fmt.Errorf("batch resource: %w", err)
	}
	return res.OutBatchNo, db.ApplyCallback(ctx, n.ID, res.OutBatchNo, ledger.BatchStatus{
		BatchID: res.BatchID, Status: res.BatchStatus, CloseReason: res.CloseReason,
		SuccessAmount: int64(res.SuccessAmount), FailAmount: int64(res.FailAmount), SuccessNum: res.SuccessNum, FailNum: res.FailNum,
	})
}

func billCallback(ctx context.Context, db *ledger.DB, n *wechatpay.Notification, plaintext []byte) (string, error) {
	var res wechatpay.BillFinishedResource
	if err := json.Unmarshal(plaintext, &res); err != nil {
		return "", fmt.Errorf("bill resource: %w", err)
	}
	// An unknown bill, or one the notification contradicts, is answered 5xx: WeChat tries
	// again, and a human looks at the logged error.
	return db.ApplyBillCallback(ctx, n.ID, res.OutBillNo, ledger.BillNotice{MchID: res.MchID, Amount: int64(res.TransferAmount),
		BillState: ledger.BillState{State: res.State, TransferBillNo: res.TransferBillNo, FailReason: res.FailReason,
			CreateTime: parseTime(res.CreateTime)}})
}
