package errclass

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

func TestNames(t *testing.T) {
	for _, c := range classes {
		err := fmt.Errorf("x: %w", c.err)
		if got := Name(err); got != c.name {
			t.Errorf("Name(%v) = %s, want %s", err, got, c.name)
		}
		if got := FromName(c.name); got != c.err {
			t.Errorf("FromName(%s) = %v", c.name, got)
		}
	}
	if Name(errors.New("plain")) != "unknown" || FromName("nonsense") != errdefs.ErrUnknown {
		t.Error("an unclassified error is unknown")
	}
	if n := Name(fmt.Errorf("%w: %w", errdefs.ErrConflict, errdefs.ErrFailedPrecondition)); n != "failed-precondition" {
		t.Errorf("a conflict reported as failed-precondition is named %s", n)
	}
	if !errdefs.IsUnknown(Ensure(errors.New("plain"))) || Ensure(context.Canceled) != context.Canceled {
		t.Error("Ensure")
	}
}

func TestOS(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{
		syscall.ENOENT: "not-found", syscall.EACCES: "permission-denied", syscall.EPERM: "permission-denied",
		syscall.ENOSPC: "resource-exhausted", syscall.EDQUOT: "resource-exhausted", syscall.EEXIST: "already-exists",
		syscall.EIO: "unknown",
	} {
		err := OS(&os.PathError{Op: "open", Path: "/x", Err: errno})
		if got := Name(err); got != want {
			t.Errorf("%v: %s, want %s", errno, got, want)
		}
		if !errors.Is(err, errno) {
			t.Errorf("%v lost", errno)
		}
	}
}
