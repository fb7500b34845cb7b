//go:build !linux

package replica

import "syscall"

// childAttr: only Linux can tie the child's life to its parent's (Pdeathsig).
func childAttr() *syscall.SysProcAttr { return nil }
