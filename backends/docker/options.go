package docker

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// DefaultScope is the scope of a runtime opened without WithScope.
const DefaultScope = "default"

type options struct {
	host     string
	scope    string
	stateDir string
	eng      engine // a stand-in for the daemon (tests)

	daemonImages bool
}

// Option configures Open.
type Option func(*options) error

// WithHost sets the daemon's address, as DOCKER_HOST spells it:
// unix:///run/docker.sock (the default: $DOCKER_HOST, else Docker's own
// default socket), tcp://HOST:PORT.
func WithHost(host string) Option {
	return func(o *options) error {
		u, err := client.ParseHostURL(host)
		if err != nil {
			return fmt.Errorf("docker host %q: %v: %w", host, err, errdefs.ErrInvalidArgument)
		}
		if !slices.Contains([]string{"unix", "tcp", "http", "https"}, u.Scheme) {
			return fmt.Errorf("docker host %q: scheme %q is not unix, tcp, http or https: %w", host, u.Scheme, errdefs.ErrInvalidArgument)
		}
		o.host = host
		return nil
	}
}

// WithScope sets the runtime's scope (default DefaultScope). One daemon may
// serve several berth runtimes: each lists and controls only the
// containers created in its scope, as each libcontainer root holds its
// own. berthctl uses its state directory as the scope.
func WithScope(scope string) Option {
	return func(o *options) error {
		if scope == "" || len(scope) > 4096 {
			return fmt.Errorf("scope %q must be 1 to 4096 bytes: %w", scope, errdefs.ErrInvalidArgument)
		}
		o.scope = scope
		return nil
	}
}

// WithStateDir sets where the backend keeps the ID-mapped mounts it makes
// for the binds of user-namespaced containers (default DefaultStateDir).
// Runtimes of one scope must use the same directory.
func WithStateDir(dir string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("state directory %q is not absolute: %w", dir, errdefs.ErrInvalidArgument)
		}
		o.stateDir = filepath.Clean(dir)
		return nil
	}
}

// withEngine makes the runtime talk to e instead of a daemon.
func withEngine(e engine) Option {
	return func(o *options) error {
		o.eng = e
		return nil
	}
}

// WithDaemonImages lets Config.Image name an image the daemon already has
// when the runtime has no image store (runtime.WithImageStore), by policy:
// such images did not go through berth's import, its limits or its tag
// confinement. Without it (the default) Config.Image without a store is
// failed-precondition. With a store, images always come from the store.
func WithDaemonImages() Option {
	return func(o *options) error {
		o.daemonImages = true
		return nil
	}
}
