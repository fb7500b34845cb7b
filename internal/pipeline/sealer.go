package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// sealer groups claimed payouts into batches (pkg/batching) and seals each one in the
// ledger: out_batch_no, exact members and the frozen create body are committed together,
// before anything is sent (rule 2). It owns the batcher; timers stay in this loop.
type sealer struct {
	b         *batching.Batcher
	names     batching.Names
	notifyURL string
	db        *ledger.DB
	in        <-chan []ledger.Payout
	sealed    func() // wakes the driver
	pending   *pendingSet
	now       func() time.Time
	log       *slog.Logger

	open map[int64]ledger.Payout // claimed payouts waiting in the batcher, by ledger seq
}

// resume feeds the batcher with every payout left CLAIMED by an earlier version (which marked
// claims in their own transaction; today the seal records them), oldest first. It runs
// before intake starts, so no payout also arrives on s.in.
func (s *sealer) resume(ctx context.Context) error {
	for {
		ps, err := s.db.PayoutsInState(ctx, ledger.PayoutClaimed, 10000)
		if err != nil {
			return fmt.Errorf("resume claimed payouts: %w", err)
		}
		fresh := ps[:0]
		for _, p := range ps {
			if _, ok := s.open[p.Seq]; !ok {
				fresh = append(fresh, p)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if err := s.add(ctx, fresh); err != nil {
			return err
		}
	}
}

func (s *sealer) run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(s.untilDue())
		select {
		case <-ctx.Done():
			return nil // open groups stay RECEIVED in the ledger; the next start's sweep claims them again
		case ps := <-s.in:
			if err := s.add(context.WithoutCancel(ctx), ps); err != nil {
				return err
			}
		case <-timer.C:
			if err := s.seal(context.WithoutCancel(ctx), s.b.Due(s.now())); err != nil {
				return err
			}
		}
	}
}

func (s *sealer) untilDue() time.Duration {
	at, ok := s.b.NextDue()
	if !ok {
		return time.Hour
	}
	return max(at.Sub(s.now()), time.Millisecond)
}

func (s *sealer) add(ctx context.Context, ps []ledger.Payout) error {
	now := s.now()
	var full []batching.Batch
	for _, p := range ps {
		s.open[p.Seq] = p
		full = append(full, s.b.Add(batching.Item{
			Seq: p.Seq, OutDetailNo: p.OutDetailNo, Amount: p.Amount, Group: p.GroupKey, Rail: p.Rail, At: now,
		})...)
	}
	return s.seal(ctx, full)
}

func (s *sealer) seal(ctx context.Context, batches []batching.Batch) error {
	for _, b := range batches {
		members := make([]ledger.Payout, len(b.Items))
		seqs := make([]int64, len(b.Items))
		for i, it := range b.Items {
			members[i] = s.open[it.Seq]
			seqs[i] = it.Seq
		}
		body, err := s.body(b, members)
		if err != nil {
			return fmt.Errorf("build batch %s: %w", b.OutBatchNo, err)
		}
		err = s.db.ClaimAndSeal(ctx, ledger.Batch{
			OutBatchNo: b.OutBatchNo, Rail: b.Rail, GroupKey: b.Group, MchID: members[0].MchID,
			Members: seqs, TotalAmount: b.TotalAmount(), TotalNum: b.TotalNum(), Body: body,
		})
		if err != nil {
			return fmt.Errorf("seal batch %s: %w", b.OutBatchNo, err)
		}
		for _, seq := range seqs {
			delete(s.open, seq)
		}
		s.pending.drop(seqs...)
		s.log.Info("batch sealed", "out_batch_no", b.OutBatchNo, "details", b.TotalNum(), "amount", b.TotalAmount())
		s.sealed()
	}
	return nil
}

// body builds the frozen create request for b's rail. The batch-level fields come from the
// group key (every member shares them); totals are computed from the members; user_name is
// the ciphertext stored at intake.
func (s *sealer) body(b batching.Batch, members []ledger.Payout) ([]byte, error) {
	k, err := batching.ParseKey(b.Group)
	if err != nil {
		return nil, err
	}
	name, remark, err := s.names.Render(b, s.now())
	if err != nil {
		return nil, err
	}
	if k.BatchName != "" {
		name = batching.TrimChars(k.BatchName, 32)
	}
	if k.BatchRemark != "" {
		remark = batching.TrimChars(k.BatchRemark, 32)
	}
	total, num := wechatpay.Fen(b.TotalAmount()), b.TotalNum()
	switch k.Rail {
	case payout.RailDirect:
		req := wechatpay.CreateBatchRequest{
			AppID: k.AppID, BatchName: name, BatchRemark: remark, NotifyURL: s.notifyURL, OutBatchNo: b.OutBatchNo,
			TotalAmount: total, TotalNum: num, TransferSceneID: k.SceneID,
			TransferDetailList: make([]wechatpay.TransferDetailInput, len(members)),
		}
		for i, p := range members {
			req.TransferDetailList[i] = wechatpay.TransferDetailInput{
				OpenID: p.OpenID, OutDetailNo: p.OutDetailNo, TransferAmount: wechatpay.Fen(p.Amount),
				TransferRemark: p.Remark, UserName: p.UserNameCipher,
			}
		}
		return json.Marshal(req)
	case payout.RailPartner:
		req := wechatpay.PartnerCreateBatchRequest{
			AuthorizationType: k.AuthorizationType, BatchName: name, BatchRemark: remark, OutBatchNo: b.OutBatchNo,
			SpAppID: k.SpAppID, SubAppID: k.SubAppID, SubMchID: k.SubMchID, TotalAmount: total, TotalNum: num,
			TransferPurpose: k.TransferPurpose, TransferScene: k.TransferScene,
			TransferDetailList: make([]wechatpay.PartnerTransferDetailInput, len(members)),
		}
		for i, p := range members {
			req.TransferDetailList[i] = wechatpay.PartnerTransferDetailInput{
				OpenID: p.OpenID, OutDetailNo: p.OutDetailNo, TransferAmount: wechatpay.Fen(p.Amount),
				TransferRemark: p.Remark, UserName: p.UserNameCipher,
			}
		}
		return json.Marshal(req)
	}
	return nil, fmt.Errorf("unknown rail %q", k.Rail)
}
