package main

import (
	"context"
	"fmt"
)

// cmdRun is a placeholder until its issue lands.
func cmdRun(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "processor run: not built yet")
	return 2
}
