package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/internal/errclass"
)

// classify gives an Engine API error berth's class. A conflict (409) is the
// daemon refusing an operation in the container's current state: berth calls
// that failed-precondition (Create turns a name conflict into
// already-exists itself). A daemon that cannot be reached is unavailable.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errdefs.IsConflict(err):
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	case client.IsErrConnectionFailed(err), isBrokenStream(err):
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	// The client gives every daemon error the class of its HTTP status
	// (404 not found, 400 invalid argument, 501 not implemented...).
	return errclass.Ensure(err)
}

// isBrokenStream reports a connection to the daemon that broke mid-way, as
// when the daemon restarts during a long wait.
func isBrokenStream(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

func notImplemented(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errdefs.ErrNotImplemented)
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

func notFound() error {
	return fmt.Errorf("no such container in this runtime: %w", errdefs.ErrNotFound)
}
