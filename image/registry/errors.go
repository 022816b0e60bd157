package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berthrun/berth/internal/errclass"
)

// classify gives an error of the registry client its class: berth's own
// errors keep theirs, a registry's HTTP status maps as errhttp does (401
// and 403 to permission-denied), a network failure is unavailable, and
// whatever else the library could not make sense of came from the
// registry: invalid-argument.
func classify(err error) error {
	if err == nil || errclass.Has(err) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case 401, 403:
			return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		case 429:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		if c := errhttp.ToNative(te.StatusCode); errclass.Has(c) && !errdefs.IsUnknown(c) {
			return fmt.Errorf("%w: %w", err, c)
		}
		if te.StatusCode >= 500 {
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w (a registry that speaks plain HTTP must be named insecure): %w", err, errdefs.ErrUnavailable)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
}
