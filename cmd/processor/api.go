package main

import (
	"context"
	"fmt"
)

// cmdAPI is a placeholder until its issue lands.
func cmdAPI(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "processor api: not built yet")
	return 2
}
