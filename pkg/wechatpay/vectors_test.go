package wechatpay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestVectors_RequestSigning reproduces every request_signing vector byte for byte through the
// typed endpoint that sends it (docs/wechatpay.md §1): the URL, body and Authorization on the wire.
func TestVectors_RequestSigning(t *testing.T) {
	v := loadVectors(t)
	if len(v.RequestSigning) == 0 {
		t.Fatal("no request_signing vectors")
	}
	ctx := context.Background()
	calls := map[string]func(c *Client, body string) error{
		"batch_create_sdk_json_body": func(c *Client, body string) error {
			var req CreateBatchRequest
			if err := json.Unmarshal([]byte(body), &req); err != nil {
				return err
			}
			_, err := c.CreateTransferBatch(ctx, &req)
			return err
		},
		"batch_query_by_batch_id_with_paging": func(c *Client, _ string) error {
			_, err := c.QueryBatchByBatchID(ctx, "1030000071100999991182020050700019480001",
				BatchQuery{NeedQueryDetail: true, Offset: 0, Limit: 100, DetailStatus: DetailStatusAll})
			return err
		},
		"batch_query_by_out_batch_no_no_detail": func(c *Client, _ string) error {
			_, err := c.QueryBatchByOutBatchNo(ctx, "plfk2020042013", BatchQuery{})
			return err
		},
		"detail_query_by_out_detail_no": func(c *Client, _ string) error {
			_, err := c.QueryDetailByOutDetailNo(ctx, "plfk2020042013", "x23zy545Bd5436")
			return err
		},
		"transfer_bill_create_sdk_json_body": func(c *Client, body string) error {
			var req CreateTransferBillRequest
			if err := json.Unmarshal([]byte(body), &req); err != nil {
				return err
			}
			_, err := c.CreateTransferBill(ctx, &req)
			return err
		},
		"transfer_bill_query_empty_get": func(c *Client, _ string) error {
			_, err := c.QueryTransferBillByOutBillNo(ctx, "plfk2020042013")
			return err
		},
		"transfer_bill_cancel_post_empty_body": func(c *Client, _ string) error {
			_, err := c.CancelTransferBill(ctx, "plfk2020042013")
			return err
		},
		"handwritten_compact_chinese_body_no_trailing_lf": func(c *Client, body string) error {
			_, err := c.CreateTransferBillBody(ctx, []byte(body))
			return err
		},
		"handwritten_get_unsorted_query": func(c *Client, _ string) error {
			return c.Do(ctx, http.MethodGet, "/v3/transfer/batches/out-batch-no/plfk2020042013?need_query_detail=true&offset=100&limit=100&detail_status=FAIL", nil, nil)
		},
	}
	for _, vec := range v.RequestSigning {
		t.Run(vec.Name, func(t *testing.T) {
			msg := RequestMessage(vec.Method, vec.URL, vec.Timestamp, vec.NonceStr, []byte(vec.Body))
			mustEqualBytes(t, "sign message", msg, []byte(vec.SignMessage))
			s := Signer{MchID: v.Parameters.MchID, SerialNo: v.Parameters.MerchantSerialNo, Key: loadTestKeys(t).merchant}
			a, err := s.Authorization(vec.Method, vec.URL, vec.Timestamp, vec.NonceStr, []byte(vec.Body))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := a.Signature, vec.Signature; got != want {
				t.Fatalf("signature = %s, want %s", got, want)
			}
			if got, want := a.String(), vec.Authorization; got != want {
				t.Fatalf("Authorization = %s, want %s", got, want)
			}
			if back, err := ParseAuthorization(vec.Authorization); err != nil || back != a {
				t.Fatalf("ParseAuthorization = %+v, %v; want %+v", back, err, a)
			}

			call, ok := calls[vec.Name]
			if !ok {
				t.Fatalf("no endpoint mapped for vector %q: add one", vec.Name)
			}
			f := newFakeAPI(t, ok200)
			c := newTestClient(t, testConfig(t, f.srv.URL),
				WithClock(func() time.Time { return time.Unix(vec.Timestamp, 0) }),
				WithNonce(func() string { return vec.NonceStr }))
			f.now = func() time.Time { return time.Unix(vec.Timestamp, 0) }
			if err := call(c, vec.Body); err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != vec.Method || r.uri != vec.URL {
				t.Fatalf("sent %s %s, want %s %s", r.method, r.uri, vec.Method, vec.URL)
			}
			mustEqualBytes(t, "sent body", r.body, []byte(vec.Body))
			if got, want := r.auth, vec.Authorization; got != want {
				t.Fatalf("sent Authorization %s, want %s", got, want)
			}
			if got, want := r.serial, v.Parameters.WechatPayPublicKeyID; got != want {
				t.Fatalf("sent Wechatpay-Serial %q, want %q", got, want)
			}
		})
	}
}

func ok200(int, *http.Request) (int, string) { return http.StatusOK, "{}" }

// TestVectors_ResponseVerification checks every response_verification verdict at the
// vector's clock (docs/wechatpay.md §2), offline and over real HTTP.
func TestVectors_ResponseVerification(t *testing.T) {
	v := loadVectors(t)
	if len(v.ResponseVerification) == 0 {
		t.Fatal("no response_verification vectors")
	}
	pub := &loadTestKeys(t).platform.PublicKey
	for _, vec := range v.ResponseVerification {
		t.Run(vec.Name, func(t *testing.T) {
			h := headerOf(vec.Headers)
			msg := ResponseMessage(h.Get(HeaderTimestamp), h.Get(HeaderNonce), []byte(vec.Body))
			mustEqualBytes(t, "verify message", msg, []byte(vec.VerifyMessage))
			sigValid := h.Get(HeaderSerial) == v.Parameters.WechatPayPublicKeyID &&
				VerifySignature(pub, msg, h.Get(HeaderSignature)) == nil
			if sigValid != vec.ExpectedSignatureValid {
				t.Fatalf("signature valid = %v, want %v", sigValid, vec.ExpectedSignatureValid)
			}
			if vec.BodyThatWasSigned != nil {
				signed := ResponseMessage(h.Get(HeaderTimestamp), h.Get(HeaderNonce), []byte(*vec.BodyThatWasSigned))
				if err := VerifySignature(pub, signed, h.Get(HeaderSignature)); err != nil {
					t.Fatalf("the originally signed body does not verify: %v", err)
				}
			}
			clock := WithClock(func() time.Time { return time.Unix(vec.VerifyNow, 0) })
			c := newTestClient(t, testConfig(t, "https://api.mch.weixin.qq.com"), clock)
			err := c.Verify(h, []byte(vec.Body))
			if got := err == nil; got != vec.ExpectedValid {
				t.Fatalf("Verify = %v, want valid=%v", err, vec.ExpectedValid)
			}
			if err != nil && !errors.Is(err, ErrUnverified) {
				t.Fatalf("Verify error %v does not wrap ErrUnverified", err)
			}

			status := http.StatusOK
			if vec.Body == "" {
				status = http.StatusNoContent
			}
			srv := newRawServer(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, val := range vec.Headers {
					w.Header().Set(k, val)
				}
				w.WriteHeader(status)
				w.Write([]byte(vec.Body))
			})
			c = newTestClient(t, testConfig(t, srv.URL), clock)
			var out json.RawMessage
			err = c.Do(context.Background(), http.MethodGet, "/v3/transfer/batches/out-batch-no/plfk2020042013?need_query_detail=false", nil, &out)
			if got := err == nil; got != vec.ExpectedValid {
				t.Fatalf("Do over HTTP = %v, want valid=%v", err, vec.ExpectedValid)
			}
			if err != nil && (!errors.Is(err, ErrUnverified) || Classify(err) != ClassAmbiguous) {
				t.Fatalf("Do error %v: want ErrUnverified, class ambiguous (got %s)", err, Classify(err))
			}
			if err == nil && string(out) != vec.Body {
				t.Fatalf("decoded %q, want %q", out, vec.Body)
			}
		})
	}
}

// TestVectors_AEADNotifications decrypts every resource, rejects the negatives, and checks
// the full signed callback, where any changed body byte must fail (docs/wechatpay.md §7).
func TestVectors_AEADNotifications(t *testing.T) {
	v := loadVectors(t)
	if len(v.AEADNotifications) == 0 {
		t.Fatal("no aead_notifications vectors")
	}
	for _, vec := range v.AEADNotifications {
		t.Run(vec.Name, func(t *testing.T) {
			pt, err := DecryptAEAD(vec.APIv3Key, vec.Nonce, vec.AssociatedData, vec.Ciphertext)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualBytes(t, "plaintext", pt, []byte(vec.ExpectedPlaintext))
			if _, err := DecryptAEAD(vec.APIv3Key, vec.Nonce, vec.Negative.WrongAssociatedData, vec.Ciphertext); err == nil {
				t.Fatal("wrong associated data decrypted")
			}
			if _, err := DecryptAEAD(vec.Negative.WrongKey, vec.Nonce, vec.AssociatedData, vec.Ciphertext); err == nil {
				t.Fatal("wrong key decrypted")
			}

			c := newTestClient(t, testConfig(t, "https://api.mch.weixin.qq.com"),
				WithClock(func() time.Time { return time.Unix(vec.Notification.VerifyNow, 0) }))
			h := headerOf(vec.Notification.Headers)
			body := []byte(vec.Notification.Body)
			n, err := c.ParseNotification(h, body)
			if got := err == nil; got != vec.Notification.ExpectedValid {
				t.Fatalf("ParseNotification = %v, want valid=%v", err, vec.Notification.ExpectedValid)
			}
			got, err := n.Decrypt(vec.APIv3Key)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualBytes(t, "notification plaintext", got, []byte(vec.ExpectedPlaintext))
			checkTypedResource(t, n, vec.APIv3Key)

			for i := range body {
				changed := append([]byte(nil), body...)
				changed[i] ^= 0x01
				if _, err := c.ParseNotification(h, changed); !errors.Is(err, ErrUnverified) {
					t.Fatalf("body byte %d changed: ParseNotification = %v, want ErrUnverified", i, err)
				}
			}
		})
	}
}

// checkTypedResource decodes n with its typed helper and checks the fields the ledger uses.
func checkTypedResource(t *testing.T, n *Notification, key string) {
	t.Helper()
	switch n.EventType {
	case EventBatchFinished:
		r, err := n.BatchResource(key)
		if err != nil {
			t.Fatal(err)
		}
		if r.OutBatchNo != "plfk2020042013" || r.BatchStatus != BatchFinished || r.TotalAmount != 300 ||
			r.SuccessAmount+r.FailAmount != r.TotalAmount || r.SuccessNum+r.FailNum != r.TotalNum {
			t.Fatalf("batch resource %+v", r)
		}
		if _, err := n.BillResource(key); !errors.Is(err, ErrBadNotification) {
			t.Fatalf("BillResource on a batch event = %v, want ErrBadNotification", err)
		}
	case EventBillFinished:
		r, err := n.BillResource(key)
		if err != nil {
			t.Fatal(err)
		}
		if r.OutBillNo != "plfk2020042013" || r.State != BillSuccess || r.TransferAmount != 400 || !BillFinal(r.State) {
			t.Fatalf("bill resource %+v", r)
		}
	default:
		t.Fatalf("vector event type %q has no typed helper check", n.EventType)
	}
}

// TestVectors_OAEP decrypts each user_name vector with the platform TEST key, and checks
// that EncryptUserName produces what that key decrypts (docs/wechatpay.md §3).
func TestVectors_OAEP(t *testing.T) {
	v := loadVectors(t)
	if len(v.RSAOAEPUserName) == 0 {
		t.Fatal("no rsa_oaep_user_name vectors")
	}
	k := loadTestKeys(t)
	c := newTestClient(t, testConfig(t, "https://api.mch.weixin.qq.com"))
	for _, vec := range v.RSAOAEPUserName {
		t.Run(vec.Name, func(t *testing.T) {
			got, err := DecryptOAEP(k.platform, vec.Ciphertext)
			if err != nil {
				t.Fatal(err)
			}
			if got != vec.Plaintext {
				t.Fatalf("decrypted %q, want %q", got, vec.Plaintext)
			}
			ct, err := c.EncryptUserName(vec.Plaintext)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := DecryptOAEP(k.platform, ct); err != nil || back != vec.Plaintext {
				t.Fatalf("EncryptUserName round trip = %q, %v", back, err)
			}
		})
	}
}
