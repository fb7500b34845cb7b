package batching

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/paystream/paystream/pkg/payout"
)

// Key is everything that must be equal for requests to share one batch. On the batch API rails: the
// rail and merchant, the batch-level fields of that rail's create body (docs/wechatpay.md §4: appid
// and transfer_scene_id; docs/wechatpay.md §6: sub_mchid, sub_appid, sp_appid, authorization_type,
// transfer_purpose, transfer_scene), whether user_name is present (all or none per batch,
// docs/wechatpay.md §4) and the request's batch name/remark hints (hints shape the batch). On the
// bills rail every member is its own bill with its own body (docs/transfer-bills.md), so only the
// rail, merchant and appid are: the batch is the processor's unit of sealing and budgeting.
type Key struct {
	Rail              string
	MchID             string
	AppID             string
	SceneID           string
	SubMchID          string
	SubAppID          string
	SpAppID           string
	AuthorizationType string
	TransferPurpose   string
	TransferScene     string
	Named             bool
	BatchName         string
	BatchRemark       string
}

// KeyFor returns the group key of r paid on rail: on payout.RailBills only Rail, MchID and
// AppID are set; on any other rail every batch-level field of r.
func KeyFor(rail string, r *payout.Request) Key {
	if rail == payout.RailBills {
		return Key{Rail: rail, MchID: r.MchID, AppID: r.AppID}
	}
	return Key{
		Rail: rail, MchID: r.MchID, AppID: r.AppID, SceneID: r.SceneID,
		SubMchID: r.SubMchID, SubAppID: r.SubAppID, SpAppID: r.SpAppID,
		AuthorizationType: r.AuthorizationType, TransferPurpose: r.TransferPurpose,
		TransferScene: r.TransferScene, Named: r.HasName(),
		BatchName: r.BatchName, BatchRemark: r.BatchRemark,
	}
}

// KeyOf returns the group key of r on the batch product: KeyFor(r.Rail(), r).
func KeyOf(r *payout.Request) Key { return KeyFor(r.Rail(), r) }

// GroupKeyFor returns KeyFor(rail, r).String(): the stable string the pipeline stores in
// the ledger and puts in Item.Group.
func GroupKeyFor(rail string, r *payout.Request) string { return KeyFor(rail, r).String() }

// GroupKey returns GroupKeyFor(r.Rail(), r).
func GroupKey(r *payout.Request) string { return KeyOf(r).String() }

// keyFields pairs each wire name with its Key field, in wire-name order ("named", the one
// boolean, sorts between mchid and rail); String and ParseKey both use it.
var keyFields = []struct {
	name string
	ptr  func(*Key) *string
}{
	{"appid", func(k *Key) *string { return &k.AppID }},
	{"authorization_type", func(k *Key) *string { return &k.AuthorizationType }},
	{"batch_name", func(k *Key) *string { return &k.BatchName }},
	{"batch_remark", func(k *Key) *string { return &k.BatchRemark }},
	{"mchid", func(k *Key) *string { return &k.MchID }},
	{"rail", func(k *Key) *string { return &k.Rail }},
	{"sp_appid", func(k *Key) *string { return &k.SpAppID }},
	{"sub_appid", func(k *Key) *string { return &k.SubAppID }},
	{"sub_mchid", func(k *Key) *string { return &k.SubMchID }},
	{"transfer_purpose", func(k *Key) *string { return &k.TransferPurpose }},
	{"transfer_scene", func(k *Key) *string { return &k.TransferScene }},
	{"transfer_scene_id", func(k *Key) *string { return &k.SceneID }},
}

// String encodes k as a URL query with sorted keys and empty fields left out, e.g.
// "appid=wxa0000000000000001&mchid=1900000001&named=1&rail=direct&transfer_scene_id=1001",
// byte for byte what url.Values.Encode gives (ledgers store these strings; the batcher
// groups by them). Equal keys give equal strings and ParseKey inverts it. It runs once per
// payout at intake, so it builds the string directly.
func (k Key) String() string {
	var b strings.Builder
	b.Grow(128)
	add := func(name, value string) {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(value))
	}
	for _, f := range keyFields {
		if f.name == "rail" && k.Named {
			add("named", "1")
		}
		if s := *f.ptr(&k); s != "" {
			add(f.name, s)
		}
	}
	return b.String()
}

// ParseKey decodes a Key.String.
func ParseKey(s string) (Key, error) {
	var k Key
	v, err := url.ParseQuery(s)
	if err != nil {
		return k, fmt.Errorf("batching: parse group key: %w", err)
	}
	for _, f := range keyFields {
		*f.ptr(&k) = v.Get(f.name)
		delete(v, f.name)
	}
	k.Named = v.Get("named") == "1"
	delete(v, "named")
	if len(v) > 0 || k.Rail == "" {
		return k, fmt.Errorf("batching: parse group key: not a group key")
	}
	return k, nil
}
