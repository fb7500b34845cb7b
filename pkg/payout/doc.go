// Package payout is the payout request contract between upstream systems and the
// processor: the Request event, its strict decoder (Decode), its business rules (Validate),
// the canonical content that identifies what a request pays to whom (AppendContent, MsgID),
// and a Publisher that sends requests to JetStream.
//
// A request travels as JSON on payouts.requests.<mchid> with Nats-Msg-Id = MsgID(r): its
// out_detail_no followed by a digest of its content. JetStream drops an identical
// re-publish inside the stream's duplicate window (the processor's ledger drops it after
// that), while a request that reuses a key with different content gets a different id, is
// stored, and reaches the processor, which dead-letters it as a conflict instead of it
// vanishing as a "duplicate".
//
// Real names never travel or rest in plain text: the producer seals user_name with WeChat
// Pay's public key (NameKey.Seal, RSA-OAEP exactly as the batch body carries it, spec §3)
// into user_name_cipher, tagged with the key's id in wechatpay_serial. Publisher does this
// before a message leaves the process; the processor refuses plaintext names
// (Limits.EncryptedNamesOnly) and passes the ciphertext on to WeChat unchanged.
package payout
