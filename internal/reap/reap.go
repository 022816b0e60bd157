// Package reap kills what is left of a container: every process its
// cgroup still holds, read again until none is. A cgroup's members are
// the container's own, so a pid reused between the read and the kill is
// still the container's.
package reap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
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

// StatFields splits a /proc/<pid>/stat into its fields from the third on
// (the state first). The command's name, the second, is in parentheses
// and may hold anything, closing parentheses and spaces included: the
// fields are counted from the last closing parenthesis.
func StatFields(stat []byte) ([][]byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc stat %q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) == 0 {
		return nil, fmt.Errorf("malformed /proc stat %q", stat)
	}
	return f, nil
}

// Zombie reports whether process pid of this host is a zombie. A
// container's init whose main thread ended alone is one while its other
// threads run on.
func Zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := StatFields(b)
	return err == nil && string(f[0]) == "Z"
}

// ErrGone is Signal's error for a process that is gone, or is no longer
// the one its check accepts.
var ErrGone = errors.New("the process is gone")

// Signal sends sig to process pid of this host through a pidfd. check
// runs once the pidfd is open, to confirm that pid is still the process
// meant: a pid reused before is refused by it (ErrGone, or check's own
// error), and one reused after cannot be reached through the pidfd. Other
// errors are the kernel's.
func Signal(pid int, sig syscall.Signal, check func() error) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrGone
		}
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if err := check(); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrGone
		}
		return fmt.Errorf("signal %d to %d: %w", sig, pid, err)
	}
	return nil
}
