package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/backends/docker"
	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

const defaultBackend = "libcontainer"

// backends maps --backend names to the function that opens that engine on
// a state directory.
var backends = map[string]func(root string, o openOptions) (*runtime.Runtime, error){
	"libcontainer": openLibcontainer,
	"docker":       openDocker,
	"parallels":    openParallels,
}

// openOptions are what a command asks of the backend it opens.
type openOptions struct {
	// attached: the command waits for its containers in the foreground,
	// so they may be children of this process (a backend may ignore it).
	attached bool
	// policy is the volume policy the runtime enforces.
	policy volume.Policy
	// security is what container specs may ask for.
	security runtime.SecurityPolicy
	// dockerHost is the Docker daemon's address (docker backend).
	dockerHost string
	// supervisor is the supervisor binary (libcontainer and parallels):
	// "" for berth-supervisor beside berthctl if there, "self" for
	// berthctl itself.
	supervisor string
	// diskFS is what new root disks are made of (parallels backend).
	diskFS string
}

func lookupBackend(name string) (func(string, openOptions) (*runtime.Runtime, error), error) {
	open, ok := backends[name]
	if !ok {
		return nil, fmt.Errorf("backend %q (available: %s): %w", name, backendNames(), errdefs.ErrNotImplemented)
	}
	return open, nil
}

func backendNames() string {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// engineOptions are the embedded engine's options, for libcontainer and
// parallels.
func (o openOptions) engineOptions() []libcontainer.Option {
	var opts []libcontainer.Option
	if o.attached {
		opts = append(opts, libcontainer.Attached())
	}
	sup := o.supervisor
	if sup == "" && !o.attached {
		// Found, not named: an attached run starts no supervisor.
		sup = libcontainer.SupervisorBinaryBeside()
	}
	if sup != "" && sup != "self" {
		opts = append(opts, libcontainer.WithSupervisorBinary(sup))
	}
	return opts
}

func openLibcontainer(root string, o openOptions) (*runtime.Runtime, error) {
	engine, err := libcontainer.Open(root, o.engineOptions()...)
	if err != nil {
		return nil, err
	}
	return newRuntime(engine, root, o)
}

// newRuntime wraps an engine with the runtime every backend shares: the
// state directory, the volume policy and the image store under root.
func newRuntime(engine driver.Runtime, root string, o openOptions) (*runtime.Runtime, error) {
	store, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		engine.Close()
		return nil, err
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root), runtime.WithVolumePolicy(o.policy), runtime.WithSecurityPolicy(o.security), runtime.WithImageStore(store))
	if err != nil {
		engine.Close()
		return nil, err
	}
	return rt, nil
}

// openParallels opens the disk-image engine. Its root disks go through the
// runtime's volume manager and policy, like volumes: the policy is given
// once, to the runtime.
func openParallels(root string, o openOptions) (*runtime.Runtime, error) {
	var opts []parallels.Option
	if o.diskFS != "" {
		opts = append(opts, parallels.WithFilesystem(o.diskFS))
	}
	opts = append(opts, parallels.WithEngineOptions(o.engineOptions()...))
	engine, err := parallels.Open(root, opts...)
	if err != nil {
		return nil, err
	}
	return newRuntime(engine, root, o)
}

// openDocker opens the Docker backend. The state directory is also the
// backend's scope: containers created with one --root are listed and
// controlled only with the same --root, as with libcontainer.
func openDocker(root string, o openOptions) (*runtime.Runtime, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	opts := []docker.Option{docker.WithScope(abs)}
	if o.dockerHost != "" {
		opts = append(opts, docker.WithHost(o.dockerHost))
	}
	engine, err := docker.Open(opts...)
	if err != nil {
		return nil, err
	}
	return newRuntime(engine, root, o)
}
