// Package wechatpaytest is a WeChat Pay APIv3 sandbox for 商家转账, shaped like httptest:
// real HTTP on loopback with the TEST-ONLY keys of testdata/testvectors. It is the ground
// truth of paystream's end-to-end tests, benchmarks, soaks and `make run`.
//
//	srv := wechatpaytest.NewServer(t)                  // closed by t.Cleanup
//	c, _ := wechatpay.NewClient(srv.ClientConfig())    // keys, ids, URL, APIv3 key
//	srv.Fail(wechatpaytest.EndpointCreateBatch, wechatpaytest.DropAfterCommit)
//	paid := srv.Paid()                                 // out_detail_no → times paid
//
// What it checks, as WeChat does (section numbers refer to docs/wechatpay.md): every
// request's Authorization (mchid, serial, ±TimestampWindow, SHA256withRSA over the exact
// RequestURI and body, §1) or 401 SIGN_ERROR; batch creates (§4, §6) field by field or 400
// PARAM_ERROR; user_name by decrypting it (§3); the balance (403 NOT_ENOUGH); rate limits per
// endpoint in one-second windows (429 FREQUENCY_LIMITED). Every answer, errors included, is
// signed with the platform key (§2), and so is every callback (§7, AES-256-GCM under the
// APIv3 key).
//
// Idempotency: a create with a known out_batch_no (out_bill_no) and the same decoded content
// (names compared after decryption) answers 200 with the existing batch; different content
// answers 400 INVALID_REQUEST. Only a new number makes a new batch.
//
// Time: a batch is ACCEPTED (details INIT) for AcceptDelay, then PROCESSING; each detail is
// paid ProcessDelay later, and the batch is FINISHED when all are (or CLOSED). Durations are
// divided by Options.Speed and evaluated lazily from timestamps: no goroutine per batch.
// Outcomes are chosen by openid: "fail-<FAIL_REASON>-<anything>" (FailOpenIDPrefix), e.g.
// "fail-ACCOUNT_FROZEN-u42", fails with that fail_reason; any other openid succeeds. Details
// above Options.NoPasswordLimit wait in WAIT_PAY for Confirm (or AutoConfirm).
//
// Transfer bills (docs/transfer-bills.md) wait in WAIT_USER_CONFIRM for their simulated payee: at
// Options.BillAutoConfirm a "decline-…" openid declines (FAIL USER_DECLINED), a "noconfirm-…" one
// never acts and the bill closes FAIL OVERDUE_CLOSE at Options.BillConfirmTimeout plus
// Options.BillCloseLag, any other confirms; ConfirmBill and DeclineBill act for any payee. A cancel
// before the confirmation is CANCELING for ProcessDelay, then CANCELLED. The same create again
// answers the same bill (and its package_info) while it is not final, and 400 ALREADY_EXISTS once
// it is. Creates must carry exactly the report infos of their scene (Options.BillScenes).
// Options.Product makes the merchant hold one product only: the other's creates answer 403 NO_AUTH
// (docs/transfer-bills.md §1).
//
// Callbacks: Options.NotifyLoss drops a share of them for good (queries still tell the
// truth), Options.NotifyDelay sends them late; both for batches and bills. Delivery times,
// retries included, are on the sandbox clock (Options.Now).
//
// Its own record: Paid counts each SUCCESS detail once per batch, keyed by out_detail_no,
// and each SUCCESS bill, keyed by out_bill_no, so the same number paid in two batches, or
// in a batch and as a bill, shows 2. Payments, DoublePaid, Bills and Balance complete it;
// with Options.Admin the same is served under /sandbox/ (see AdminPaid, AdminBills).
//
// Faults (Fail, FailNext, FailRate, Options.Faults): Latency, SystemError, FrequencyLimited,
// NotFound, DropBeforeCommit, DropAfterCommit, Truncate, Unsigned, BadSignature; Stats
// counts them.
package wechatpaytest
