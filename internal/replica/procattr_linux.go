package replica

import "syscall"

// childAttr makes litestream receive SIGTERM when the processor that started it dies, even by
// SIGKILL: it then ships what it has and exits, instead of living on beside a replacement.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
