// Package errclass is berth's one list of error classes: the classes of
// github.com/containerd/errdefs, named in kebab case. Every package that
// makes sure an error has a class, names a class (berthctl's output, the
// libcontainer monitor's status pipe) or maps an OS error to a class uses
// it.
package errclass

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/containerd/errdefs"
)

// classes are berth's error classes, in the order they are tested: an
// error carrying several classes (a daemon's conflict berth reports as
// failed-precondition) is named by the first.
var classes = []struct {
	name string
	is   func(error) bool
	err  error
}{
	{"invalid-argument", errdefs.IsInvalidArgument, errdefs.ErrInvalidArgument},
	{"not-found", errdefs.IsNotFound, errdefs.ErrNotFound},
	{"already-exists", errdefs.IsAlreadyExists, errdefs.ErrAlreadyExists},
	{"failed-precondition", errdefs.IsFailedPrecondition, errdefs.ErrFailedPrecondition},
	{"permission-denied", errdefs.IsPermissionDenied, errdefs.ErrPermissionDenied},
	{"not-implemented", errdefs.IsNotImplemented, errdefs.ErrNotImplemented},
	{"resource-exhausted", errdefs.IsResourceExhausted, errdefs.ErrResourceExhausted},
	{"unavailable", errdefs.IsUnavailable, errdefs.ErrUnavailable},
	{"canceled", errdefs.IsCanceled, context.Canceled},
	{"deadline-exceeded", errdefs.IsDeadlineExceeded, context.DeadlineExceeded},
	{"conflict", errdefs.IsConflict, errdefs.ErrConflict},
	{"unauthenticated", errdefs.IsUnauthorized, errdefs.ErrUnauthenticated},
	{"aborted", errdefs.IsAborted, errdefs.ErrAborted},
	{"out-of-range", errdefs.IsOutOfRange, errdefs.ErrOutOfRange},
	{"data-loss", errdefs.IsDataLoss, errdefs.ErrDataLoss},
	{"internal", errdefs.IsInternal, errdefs.ErrInternal},
	{"unknown", errdefs.IsUnknown, errdefs.ErrUnknown},
}

// Name returns err's class in kebab case, "unknown" when it has none.
func Name(err error) string {
	for _, c := range classes {
		if c.is(err) {
			return c.name
		}
	}
	return "unknown"
}

// FromName is the errdefs error of a class Name returned; an unknown name
// is errdefs.ErrUnknown.
func FromName(name string) error {
	for _, c := range classes {
		if c.name == name {
			return c.err
		}
	}
	return errdefs.ErrUnknown
}

// Has reports whether err carries one of the classes.
func Has(err error) bool {
	for _, c := range classes {
		if c.is(err) {
			return true
		}
	}
	return false
}

// Ensure returns err if it has a class (context errors are classes of their
// own), else err with the unknown class.
func Ensure(err error) error {
	if err == nil || Has(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
}

// OS gives an operating-system error the class of its errno: ENOENT
// not-found, EACCES and EPERM permission-denied, ENOSPC and EDQUOT
// resource-exhausted, EEXIST already-exists. Any other error is returned as
// it is.
func OS(err error) error {
	if class := OSClass(err); class != nil {
		return fmt.Errorf("%w: %w", err, class)
	}
	return err
}

// OSClass is the errdefs class OS gives err, nil when none.
func OSClass(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return errdefs.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return errdefs.ErrPermissionDenied
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return errdefs.ErrResourceExhausted
	case errors.Is(err, fs.ErrExist):
		return errdefs.ErrAlreadyExists
	}
	return nil
}
