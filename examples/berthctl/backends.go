package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime"
)

const defaultBackend = "libcontainer"

// backends maps --backend names to the function that opens that engine on
// a state directory. docker and parallels join this table when they exist.
var backends = map[string]func(root string, o openOptions) (*runtime.Runtime, error){
	"libcontainer": openLibcontainer,
}

// openOptions are what a command asks of the backend it opens.
type openOptions struct {
	// attached: the command waits for its containers in the foreground,
	// so they may be children of this process (a backend may ignore it).
	attached bool
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

func openLibcontainer(root string, o openOptions) (*runtime.Runtime, error) {
	var opts []libcontainer.Option
	if o.attached {
		opts = append(opts, libcontainer.Attached())
	}
	engine, err := libcontainer.Open(root, opts...)
	if err != nil {
		return nil, err
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		engine.Close()
		return nil, err
	}
	return rt, nil
}
