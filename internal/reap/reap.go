// Package reap kills what is left of a container: every process its
// cgroup still holds, read again until none is. A cgroup's members are
// the container's own, so a pid reused between the read and the kill is
// still the container's.
package reap

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// KillAll sends SIGKILL to every pid list returns, again and again, until
// list returns none (or an error: the cgroup is gone), or ctx ends.
func KillAll(ctx context.Context, list func() ([]int, error)) error {
	for {
		pids, err := list()
		if err != nil || len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v outlive SIGKILL: %w", pids, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
