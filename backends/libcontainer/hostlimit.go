package libcontainer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
)

// taskHeadroom is how many tasks (threads) a create leaves free under the
// host's limit: what a container's start needs (runc's init stages and
// their threads) and what the supervisors and the caller may still add.
// Past that, a create is refused before anything is made: a Go process
// that cannot make a thread crashes, and a supervisor's crash would lose
// the exit codes of all its containers.
const taskHeadroom = 256

// checkHostTasks refuses a create, resource-exhausted with one line naming
// the limit, when the host's tasks are within taskHeadroom of
// kernel.pid_max or kernel.threads-max.
func checkHostTasks() error {
	tasks, err := hostTasks()
	if err != nil {
		return nil // unknown: the create tells
	}
	name, limit := taskLimit()
	if limit > 0 && tasks+taskHeadroom >= limit {
		return fmt.Errorf("host limit %s (%d) reached: %d tasks run and a container needs %d free: %w", name, limit, tasks, taskHeadroom, errdefs.ErrResourceExhausted)
	}
	return nil
}

// hostTasks is how many tasks (threads) the host runs, from /proc/loadavg.
func hostTasks() (int, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, errors.New("/proc/loadavg: bad format")
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, errors.New("/proc/loadavg: bad format")
	}
	return strconv.Atoi(total)
}

// taskLimit is the lower of kernel.pid_max and kernel.threads-max.
func taskLimit() (string, int) {
	name, limit := "", 0
	for _, s := range []struct{ name, path string }{
		{"kernel.pid_max", "/proc/sys/kernel/pid_max"},
		{"kernel.threads-max", "/proc/sys/kernel/threads-max"},
	} {
		b, err := os.ReadFile(s.path)
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && n > 0 && (limit == 0 || n < limit) {
			name, limit = s.name, n
		}
	}
	return name, limit
}

// hostLimitError is err, a failure to make a process, a thread, a
// descriptor or memory, as resource-exhausted with one line naming the
// host's limit (a Go runtime's crash dump of runc's init, say, is dropped);
// nil if err is none of these.
func hostLimitError(err error) error {
	msg := err.Error()
	has := func(s ...string) bool {
		for _, x := range s {
			if strings.Contains(msg, x) {
				return true
			}
		}
		return false
	}
	var what string
	switch {
	case errors.Is(err, syscall.EAGAIN), has("resource temporarily unavailable", "failed to create new OS thread"):
		tasks, _ := hostTasks()
		name, limit := taskLimit()
		what = fmt.Sprintf("no process or thread could be made: %d tasks run, %s is %d (or the pids cgroup's limit)", tasks, name, limit)
	case errors.Is(err, syscall.ENFILE), has("too many open files in system", "file table overflow"):
		// Before EMFILE: its message begins the same.
		what = "the host's descriptor limit (fs.file-max) is reached"
	case errors.Is(err, syscall.EMFILE), has("too many open files"):
		what = "a process's descriptor limit (RLIMIT_NOFILE) is reached"
	case errors.Is(err, syscall.ENOMEM), has("cannot allocate memory", "out of memory"):
		what = "out of memory"
	default:
		return nil
	}
	return fmt.Errorf("host limit: %s: %w", what, errdefs.ErrResourceExhausted)
}

// classifyStart is classify for the failures of a container's start, where
// a host limit is told in one line.
func classifyStart(err error) error {
	if le := hostLimitError(err); le != nil {
		return le
	}
	return classify(err)
}
