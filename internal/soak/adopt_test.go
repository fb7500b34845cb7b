package soak

import (
	"testing"
)

// TestParseAdoption: the output of `processor adopt` (cmd/processor/adopt.go), planned or
// not, gives its listed keys and totals; output without the totals line is an error.
func TestParseAdoption(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Adoption
		wantErr bool
	}{
		{"plan", "1900000100.K1\tresume in batch B1\n1900000100.K2\tpay here\n1900000100.K3\tLEFT: its request is no longer in the stream\n" +
			"adopt: instance 01ABC held 3 claims; would adopt: 1 batches resumed (1 payouts), 1 payouts to pay here (0 reclaimed from DUPLICATE), 1 left\n",
			Adoption{Listed: 3, Held: 3, Batches: 1, InBatches: 1, ToPay: 1, Left: 1}, false},
		{"done", "1900000100.K1\tresume in batch B1\n1900000100.K2\tresume in batch B1\n" +
			"adopt: instance 01ABC held 2 claims; adopted: 1 batches resumed (2 payouts), 0 payouts to pay here (0 reclaimed from DUPLICATE), 0 left\n",
			Adoption{Listed: 2, Held: 2, Batches: 1, InBatches: 2}, false},
		{"reclaimed", "adopt: instance X held 12 claims; adopted: 0 batches resumed (0 payouts), 12 payouts to pay here (2 reclaimed from DUPLICATE), 0 left\n",
			Adoption{Held: 12, ToPay: 12, Reclaimed: 2}, false},
		{"no totals line", "1900000100.K1\tpay here\n", Adoption{}, true},
		{"empty", "", Adoption{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAdoption([]byte(tt.out))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseAdoption() error %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("parseAdoption() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
