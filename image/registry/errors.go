package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berthrun/berth/internal/errclass"
)

// classify gives an error of the registry client its class: berth's own
// errors keep theirs; a registry's HTTP status is permission-denied (401,
// 403), not-found (404), unavailable (408, 429 and 5xx: a registry that
// fails) or invalid-argument (any other: a registry that makes no
// sense); a network failure is unavailable, and whatever else the
// library could not make sense of came from the registry:
// invalid-argument.
func classify(err error) error {
	if err == nil || errclass.Has(err) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch c := te.StatusCode; {
		case c == 401, c == 403:
			return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		case c == 404:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case c == 408, c == 429, c >= 500:
			// errhttp would call a 500 internal: berth's own fault.
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w (plain HTTP goes only to loopback and insecure registries): %w", err, errdefs.ErrUnavailable)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
}
