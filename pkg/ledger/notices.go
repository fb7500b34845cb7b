package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Notice kinds (notices.kind): events for upstream that are not outcomes.
const (
	// NoticeWaitUserConfirm: a bill waits for its payee's confirmation (payout.WaitUserConfirmEvent);
	// written once per bill, in the transaction that stored its package_info.
	NoticeWaitUserConfirm = "WAIT_USER_CONFIRM"
	// NoticeCancelRefused: a requested cancel cannot happen (payout.CancelRefusedEvent).
	NoticeCancelRefused = "CANCEL_REFUSED"
)

// Notice is one unpublished row of the notices outbox. OutBillNo is the payout's
// out_detail_no. WAIT_USER_CONFIRM notices carry TransferBillNo, PackageInfo and ExpireAt as
// they were when written; CANCEL_REFUSED notices carry Code (ALREADY_FINAL or
// WECHAT_REFUSED, as payout.CancelFinal and payout.CancelTooLate), Detail and the payout's
// State when refused. At is when the notice was written. The pipeline publishes it and then
// calls MarkNoticesPublished.
type Notice struct {
	ID, Seq, Amount                                                                              int64
	Kind, OutDetailNo, MchID, AppID, OutBillNo, TransferBillNo, PackageInfo, Code, Detail, State string
	ExpireAt, At                                                                                 time.Time
}

// noticeData is notices.data.
type noticeData struct {
	TransferBillNo string `json:"transfer_bill_no,omitempty"`
	PackageInfo    string `json:"package_info,omitempty"`
	ExpireAt       int64  `json:"expire_at,omitempty"`
	Code           string `json:"code,omitempty"`
	Detail         string `json:"detail,omitempty"`
	State          string `json:"state,omitempty"`
}

// addNotice writes a notice for payout seq; a WAIT_USER_CONFIRM notice is written once per
// payout (a repeat is a no-op).
func (db *DB) addNotice(ctx context.Context, tx *sql.Conn, seq int64, kind string, d noticeData) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	q := `INSERT INTO notices (seq, kind, data, at) VALUES (?, ?, ?, ?)`
	if kind == NoticeWaitUserConfirm {
		q += ` ON CONFLICT (seq) WHERE kind = 'WAIT_USER_CONFIRM' DO NOTHING`
	}
	if _, err := tx.ExecContext(ctx, q, seq, kind, string(data), ms(db.now())); err != nil {
		return fmt.Errorf("write %s notice: %w", kind, err)
	}
	return nil
}

// PendingNotices returns up to limit unpublished notices, oldest first.
func (db *DB) PendingNotices(ctx context.Context, limit int) ([]Notice, error) {
	var out []Notice
	err := eachRow(ctx, db.rdb, `SELECT n.id, n.seq, p.amount, n.kind, p.out_detail_no, p.mchid, p.appid, n.data, n.at
		FROM notices n JOIN payouts p ON p.seq = n.seq WHERE n.published_at = 0 ORDER BY n.id LIMIT ?`, []any{limit},
		func(scan func(...any) error) error {
			var n Notice
			var data string
			var at int64
			if err := scan(&n.ID, &n.Seq, &n.Amount, &n.Kind, &n.OutDetailNo, &n.MchID, &n.AppID, &data, &at); err != nil {
				return err
			}
			var d noticeData
			if err := json.Unmarshal([]byte(data), &d); err != nil {
				return fmt.Errorf("notice id=%d: %w", n.ID, err)
			}
			n.OutBillNo, n.TransferBillNo, n.PackageInfo, n.ExpireAt = n.OutDetailNo, d.TransferBillNo, d.PackageInfo, fromMS(d.ExpireAt)
			n.Code, n.Detail, n.State, n.At = d.Code, d.Detail, d.State, fromMS(at)
			out = append(out, n)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("pending notices: %w", err)
	}
	return out, nil
}

// MarkNoticesPublished marks notices as published in one transaction; already published or
// unknown ids are ignored.
func (db *DB) MarkNoticesPublished(ctx context.Context, ids []int64) error {
	return db.markPublished(ctx, "notices", ids)
}
