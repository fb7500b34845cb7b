package pipeline

import (
	"fmt"
	"slices"
	"strings"

	"github.com/paystream/paystream/pkg/payout"
)

// Merchant is who a processor pays for (docs/money-rules.md#merchant): MchID is the merchant whose key signs
// every request (on the partner rail, the service provider), SubMchIDs the sub-merchants it
// may pay for through the partner API. A request for anyone else is dead-lettered as
// misrouted, never paid.
type Merchant struct {
	MchID     string
	SubMchIDs []string
}

// refuse returns why r, published to subject, is not this processor's to pay, or "". The
// subject's merchant token (<prefix>.<mchid>) must be the body's mchid, so that per-subject
// NATS permissions mean something.
func (m Merchant) refuse(prefix, subject string, r *payout.Request) string {
	token, ok := strings.CutPrefix(subject, prefix+".")
	switch {
	case !ok || token != r.MchID:
		return fmt.Sprintf("published to %s but its mchid is %s: the subject must be %s.<mchid of the body>", subject, r.MchID, prefix)
	case r.MchID != m.MchID:
		return fmt.Sprintf("mchid %s is not this processor's merchant (%s)", r.MchID, m.MchID)
	case r.SubMchID != "" && len(m.SubMchIDs) == 0:
		return fmt.Sprintf("sub_mchid %s: this processor has no partner setup (wechatpay.sub-mchids is empty)", r.SubMchID)
	case r.SubMchID != "" && !slices.Contains(m.SubMchIDs, r.SubMchID):
		return fmt.Sprintf("sub_mchid %s is not among this processor's sub-merchants (wechatpay.sub-mchids)", r.SubMchID)
	}
	return ""
}
