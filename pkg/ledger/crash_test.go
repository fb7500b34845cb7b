package ledger

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashEnvPath  = "PAYSTREAM_LEDGER_CRASH_CHILD"
	crashEnvStart = "PAYSTREAM_LEDGER_CRASH_START"
	crashGroup    = 50
)

// crashChild writes groups start, start+1, … forever: insert (then print "acked <n>"),
// claim, seal. It is deterministic, so a restarted child redoes an unacknowledged group
// idempotently.
func crashChild(path string, start int) {
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", what, err)
		os.Exit(3)
	}
	for n := start; ; n++ {
		ps := make([]Payout, crashGroup)
		for i := range ps {
			ps[i] = newPayout(fmt.Sprintf("g%dx%d", n, i), int64(100+i))
		}
		res, err := db.InsertPayouts(ctx, ps)
		if err != nil {
			fail("insert", err)
		}
		fmt.Printf("acked %d\n", n)
		seqs := make([]int64, len(res))
		for i, r := range res {
			ps[i].Seq, seqs[i] = r.Seq, r.Seq
		}
		if err := db.MarkClaimed(ctx, seqs); err != nil {
			fail("claim", err)
		}
		if err := db.SealBatch(ctx, batchFor(fmt.Sprintf("G%d", n), ps)); err != nil {
			fail("seal", err)
		}
	}
}

func TestCrash_KillMidStream(t *testing.T) {
	if path := os.Getenv(crashEnvPath); path != "" {
		start, _ := strconv.Atoi(os.Getenv(crashEnvStart))
		crashChild(path, start)
		return
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	next := 0 // first group not yet acknowledged
	for round := 0; round < 12; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash_KillMidStream$")
		cmd.Env = append(os.Environ(), crashEnvPath+"="+path, crashEnvStart+"="+strconv.Itoa(next))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := 1 + rand.IntN(6)
		sc := bufio.NewScanner(out)
		acks := 0
		for acks < want && sc.Scan() {
			line := sc.Text()
			n, ok := strings.CutPrefix(line, "acked ")
			if !ok {
				continue
			}
			g, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("child said %q", line)
			}
			next, acks = g+1, acks+1
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Read whatever the child acknowledged before it died.
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				g, _ := strconv.Atoi(n)
				next = g + 1
			}
		}
		if err := cmd.Wait(); err == nil || acks < want {
			t.Fatalf("round %d: child ended by itself (%v) after %d of %d acks", round, err, acks, want)
		}

		db := mustOpenPath(t, path)
		for g := 0; g < next; g++ {
			for _, i := range []int{0, crashGroup - 1} {
				if _, err := db.Payout(context.Background(), fmt.Sprintf("g%dx%d", g, i)); err != nil {
					t.Fatalf("round %d: acknowledged group %d lost: %v", round, g, err)
				}
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		mustAuditClean(t, time.Now(), path)
	}
	if next < 12 {
		t.Fatalf("only %d groups acknowledged in 12 rounds", next)
	}
}
