// Package wechatpay is paystream's WeChat Pay APIv3 client for 商家转账 (merchant transfers):
// request signing, response and notification verification, sensitive-field encryption,
// typed endpoints and the error classification the rest of the product decides on.
//
// The rules it implements are in the repository's notes, docs/wechatpay.md and
// docs/transfer-bills.md, which doc comments cite by file and section. Every 2xx response is verified before its body is
// decoded; a 2xx that cannot be verified is an error that Classify calls ambiguous
// ("maybe paid"). Keys, the APIv3 key, user_name and decrypted resources never reach a log
// or an error string.
package wechatpay
