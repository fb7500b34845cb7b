package replica

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestLineLogger(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{name: "json record keeps level, message and attributes",
			writes: []string{`{"time":"2026-12-04T18:14:13Z","level":"WARN","msg":"sync error","path":"/d/l.db","n":3}` + "\n"},
			want:   "level=WARN msg=\"sync error\" n=3 path=/d/l.db"},
		{name: "split across writes",
			writes: []string{`{"level":"ERROR","msg":"re`, `plica down"}` + "\n"},
			want:   "level=ERROR msg=\"replica down\""},
		{name: "fatal error line", writes: []string{"Error: config file not found: x.yml\n"},
			want: "level=ERROR msg=\"Error: config file not found: x.yml\""},
		{name: "text line", writes: []string{"time=x level=INFO msg=hello\n"},
			want: "level=INFO msg=\"time=x level=INFO msg=hello\""},
		{name: "unknown level stays info", writes: []string{`{"level":"TRACE","msg":"wal"}`},
			want: "level=INFO msg=wal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}}))
			l := newLineLogger(context.Background(), log, nil)
			for _, w := range tc.writes {
				if _, err := l.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			l.flush()
			if got := strings.TrimSpace(out.String()); got != tc.want {
				t.Fatalf("logged %q, want %q", got, tc.want)
			}
		})
	}
}

// TestResultWriter: restore's JSON result is kept, not logged; its log lines are logged.
func TestResultWriter(t *testing.T) {
	var out bytes.Buffer
	w := &resultWriter{lineLogger: newLineLogger(context.Background(), slog.New(slog.NewTextHandler(&out, nil)), nil)}
	w.Write([]byte("time=x level=INFO msg=\"post-restore integrity check passed\"\n{\n  \"db_path\": \"/d/l.db\",\n  \"txid\": \"0000000000000003\"\n}\n"))
	w.flush()
	if w.result == nil {
		t.Fatal("no result")
	}
	if got, want := w.result.TXID, "0000000000000003"; got != want {
		t.Fatalf("txid = %q, want %q", got, want)
	}
	if got := out.String(); !strings.Contains(got, "integrity check passed") || strings.Contains(got, "db_path") {
		t.Fatalf("logged %q, want the log line and not the result", got)
	}
}
