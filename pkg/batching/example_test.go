package batching_test

import (
	"fmt"
	"time"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/payout"
)

// The pipeline's loop: record, Add, commit what is sealed; Due when the timer fires.
func Example() {
	b, err := batching.New(batching.Config{InstanceID: "P1", CapDirect: 2, MaxWait: time.Minute})
	if err != nil {
		panic(err)
	}
	r := payout.Request{MchID: "1900000001", AppID: "wxa0000000000000001", SceneID: "1001", Amount: 100}
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for seq := int64(1); seq <= 3; seq++ { // seq comes from the ledger
		it := batching.Item{Seq: seq, OutDetailNo: fmt.Sprint("D", seq), Amount: r.Amount,
			Group: batching.GroupKey(&r), Rail: r.Rail(), At: start}
		for _, s := range b.Add(it) {
			fmt.Println("full:", s.OutBatchNo, s.TotalNum(), s.TotalAmount())
		}
	}
	next, _ := b.NextDue()
	for _, s := range b.Due(next) {
		fmt.Println("due:", s.OutBatchNo, s.TotalNum(), s.TotalAmount())
	}
	// Output:
	// full: BP10000000000000000001 2 200
	// due: BP10000000000000000003 1 100
}
