package replica

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket returns the JetStream object store bucket a nats:// replica URL names, and false
// for any other replica.
func (c Config) Bucket() (string, bool) {
	u, err := url.Parse(c.Replica)
	if err != nil || u.Scheme != "nats" {
		return "", false
	}
	b := strings.Trim(u.Path, "/")
	return b, b != ""
}

// EnsureBucket creates the object store bucket of a nats:// replica when it does not exist
// yet (litestream never creates one), file-backed, with replicas copies in the cluster (1 on
// a single server; 3 on the 3-node cluster of deploy/, so the replica survives the loss of
// a NATS node's disk too). An existing bucket is left as it is. For any other replica it does
// nothing.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, c Config, replicas int) error {
	bucket, ok := c.Bucket()
	if !ok {
		return nil
	}
	_, err := js.ObjectStore(ctx, bucket)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("ledger replica bucket %s: %w", bucket, err)
	}
	_, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket,
		Description: "paystream ledger replica (litestream) of " + c.DB,
		Storage:     jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("create ledger replica bucket %s: %w", bucket, err)
	}
	return nil
}
