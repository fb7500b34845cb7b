package main

import (
	"context"
	"fmt"
)

// cmdAudit is a placeholder until its issue lands.
func cmdAudit(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "processor audit: not built yet")
	return 2
}
