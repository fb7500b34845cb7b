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
// The same package holds the outbound contract, for upstream Go services to import: what
// the processor publishes back, and the cancels it accepts. Every event is JSON; its
// subject names what happened:
//
//	payouts.requests.<mchid>            Request (in; Publisher.Publish)
//	payouts.cancel.<mchid>              CancelRequest (in; Publisher.Cancel)
//	payouts.results.<state>             OutcomeEvent: success, fail, rejected, duplicate, cancelled
//	payouts.results.wait_user_confirm   WaitUserConfirmEvent (bills rail)
//	payouts.results.cancel_refused      CancelRefusedEvent
//	payouts.deadletter.<class>          a refused inbound message, with the Header… headers
//
// A merchant has one of two WeChat Pay products. On the batch product a request is paid
// through the batch API (RailDirect, or RailPartner with a sub_mchid); on the transfer
// bills product every request is one bill (RailBills), which the payee confirms in WeChat
// and which can be cancelled until then. ValidateFor checks a request for the rail it will
// be paid on.
//
// Real names never travel or rest in plain text: the producer seals user_name with WeChat Pay's
// public key (NameKey.Seal, RSA-OAEP exactly as the batch body carries it, docs/wechatpay.md §3)
// into user_name_cipher, tagged with the key's id in wechatpay_serial. Publisher does this before a
// message leaves the process; the processor refuses plaintext names (Limits.EncryptedNamesOnly) and
// passes the ciphertext on to WeChat unchanged.
package payout
