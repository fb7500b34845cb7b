package payout

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// msgIDDigestLen is how many bytes of the content digest MsgID keeps (96 bits).
const msgIDDigestLen = 12

// AppendContent appends to dst the canonical encoding of what r pays to whom and returns the
// extended slice. Two requests with the same encoding are the same payment; the same
// out_detail_no with a different encoding is a conflict. The processor keys its ledger
// content hash on these bytes and MsgID digests them.
//
// The encoding is, in this order, each of out_detail_no, mchid, appid, openid, amount (in
// decimal ASCII), remark, transfer_scene_id, batch_name, batch_remark, sub_mchid, sub_appid,
// sp_appid, authorization_type, transfer_purpose, transfer_scene as a 4-byte big-endian
// length followed by its UTF-8 bytes, then one byte: 1 when a real name is present (user_name
// or user_name_cipher), else 0. The name itself is left out: its ciphertext differs on every
// encryption, and a digest of the plaintext would give the name away to a dictionary attack.
// Metadata (schema, source, created_at) and wechatpay_serial are left out too.
//
// A request of the bills rail with user_recv_perception or transfer_scene_report_infos
// (both decide what is sent, docs/transfer-bills.md) continues after the name byte with
// user_recv_perception as a length-prefixed field, the number of report rows as a 4-byte
// big-endian integer, and each row's info_type and info_content as length-prefixed fields,
// in order. A request with neither ends at the name byte, so its encoding (and MsgID) is what
// it was before these fields existed. The encoding stays unambiguous: every part sits at a
// position fixed by what comes before it, and the section is present exactly when the
// encoding continues after the name byte.
func (r *Request) AppendContent(dst []byte) []byte {
	put := func(b []byte) {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
		dst = append(dst, b...)
	}
	for _, f := range [...]string{r.OutDetailNo, r.MchID, r.AppID, r.OpenID} {
		put([]byte(f))
	}
	var amount [20]byte
	put(strconv.AppendInt(amount[:0], r.Amount, 10))
	for _, f := range [...]string{
		r.Remark, r.SceneID, r.BatchName, r.BatchRemark,
		r.SubMchID, r.SubAppID, r.SpAppID, r.AuthorizationType, r.TransferPurpose, r.TransferScene,
	} {
		put([]byte(f))
	}
	if r.HasName() {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	if r.UserRecvPerception == "" && len(r.SceneReportInfos) == 0 {
		return dst
	}
	put([]byte(r.UserRecvPerception))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.SceneReportInfos)))
	for _, in := range r.SceneReportInfos {
		put([]byte(in.InfoType))
		put([]byte(in.InfoContent))
	}
	return dst
}

// MsgID returns the Nats-Msg-Id of r: out_detail_no, ".", and the lowercase hex of the first
// 12 bytes of SHA-256 over AppendContent. An identical re-publish has the same id, so
// JetStream drops it as a duplicate inside the stream's duplicate window; the same key with
// different content gets a different id, so it is stored and the processor refuses it as a
// conflict rather than it being dropped unseen.
func MsgID(r *Request) string {
	var buf [512]byte
	sum := sha256.Sum256(r.AppendContent(buf[:0]))
	return r.OutDetailNo + "." + hex.EncodeToString(sum[:msgIDDigestLen])
}
