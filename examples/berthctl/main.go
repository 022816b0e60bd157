package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime"
)

func main() {
	// In a re-executed container init or supervisor this does that job
	// and never returns.
	libcontainer.Init()
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(a.main(os.Args[1:]))
}

// app is one invocation of berthctl.
type app struct {
	root       string
	backend    string
	dockerHost string
	diskFS     string
	// supervisor names the supervisor binary (see openOptions).
	supervisor string

	open func(root string, o openOptions) (*runtime.Runtime, error)
	rt   *runtime.Runtime
	// globals holds the global flags; every command's flag set takes
	// them too, so they may come before or after the command's name.
	globals *flag.FlagSet
	// attached asks for containers tied to this process (see
	// libcontainer.Attached): set by run before the backend opens.
	attached bool
	// policy holds the global switches of the volume policy.
	policy policyFlags
	// registries holds the global flags of registry access.
	registries registryFlags

	// Files, not writers: the container's streams are handed to the
	// engine as they are.
	stdin, stdout, stderr *os.File
}

// main runs the command line and returns the process's exit code.
func (a *app) main(args []string) int {
	code, err := a.execute(args)
	if a.rt != nil {
		if cerr := a.rt.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if errors.Is(err, errHelpShown) {
		return 0
	}
	if err != nil {
		report(a.stderr, err)
		return exitFailure
	}
	return code
}

func (a *app) execute(args []string) (int, error) {
	fs := newFlagSet("berthctl")
	fs.StringVar(&a.root, "root", runtime.DefaultStateDir, "state `DIR`")
	fs.StringVar(&a.backend, "backend", defaultBackend, "engine `NAME`")
	fs.StringVar(&a.dockerHost, "docker-host", "", "Docker daemon `ADDRESS` for --backend docker")
	fs.StringVar(&a.diskFS, "disk-fs", "", "filesystem `TYPE` of new root disks for --backend parallels: ext4 (default) or xfs")
	fs.StringVar(&a.supervisor, "supervisor", "", "supervisor `BINARY` of --backend libcontainer and parallels (default: berth-supervisor beside berthctl if there, else berthctl itself; self: berthctl)")
	a.policy.register(fs)
	a.registries.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(a.stdout)
			return 0, nil
		}
		return 0, flagError(fs, err)
	}
	a.globals = fs
	rest := fs.Args()
	if len(rest) == 0 {
		return 0, usageErrorf("no command given (see berthctl help)")
	}
	cmd, ok := lookupCommand(rest[0])
	if !ok {
		return 0, usageErrorf("unknown command %q (see berthctl help)", rest[0])
	}
	return cmd.run(a, a.flagSet(cmd.name), rest[1:])
}

// flagSet is a command's flag set: it holds the global flags, bound to the
// same values, so that "berthctl --fsck run ..." and "berthctl run --fsck
// ..." mean the same. The command adds its own.
func (a *app) flagSet(name string) *flag.FlagSet {
	fs := newFlagSet(name)
	if a.globals != nil {
		// Var keeps the value parsed before the command's name.
		a.globals.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	}
	return fs
}

// isGlobal tells a global flag from a command's own.
func (a *app) isGlobal(name string) bool {
	return a.globals != nil && a.globals.Lookup(name) != nil
}

// runtime opens the backend on first use, so that commands that do not
// need it (help, version, bad usage) leave the state directory alone.
func (a *app) runtime() (*runtime.Runtime, error) {
	if a.rt != nil {
		return a.rt, nil
	}
	if a.open == nil {
		// --backend may come after the command's name: it is known
		// only now.
		open, err := lookupBackend(a.backend)
		if err != nil {
			return nil, err
		}
		a.open = open
	}
	rt, err := a.open(a.root, openOptions{attached: a.attached, policy: a.policy.policy(), security: a.policy.security(), dockerHost: a.dockerHost, diskFS: a.diskFS, supervisor: a.supervisor})
	if err != nil {
		return nil, err
	}
	a.rt = rt
	return rt, nil
}

// container opens the backend and returns the container named id.
func (a *app) container(ctx context.Context, id string) (*runtime.Container, error) {
	rt, err := a.runtime()
	if err != nil {
		return nil, err
	}
	return rt.Get(ctx, id)
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: berthctl [--root DIR] [--backend NAME] [GLOBAL FLAGS] COMMAND [ARG...]\n\n")
	fmt.Fprintf(w, "global flags (before or after the command's name):\n  --root DIR      state directory (default %s)\n", runtime.DefaultStateDir)
	fmt.Fprintf(w, "  --backend NAME  engine: %s (default %s)\n", backendNames(), defaultBackend)
	fmt.Fprintf(w, "  --docker-host ADDRESS  Docker daemon of --backend docker (default $DOCKER_HOST, else unix:///var/run/docker.sock)\n")
	fmt.Fprintf(w, "  --disk-fs TYPE  root disks of --backend parallels: ext4 (default) or xfs\n")
	fmt.Fprintf(w, "  --supervisor BINARY  what supervises detached containers of --backend libcontainer and parallels\n")
	fmt.Fprintf(w, "                  (default: berth-supervisor beside berthctl if there, else berthctl; self: berthctl)\n")
	fmt.Fprintf(w, "  --allow-fs TYPE, --fsck, --allow-raw-block-without-userns, --volume-noexec\n")
	fmt.Fprintf(w, "                  relax the volume policy, each by name\n")
	fmt.Fprintf(w, "  --allow-privileged  allow specs that loosen confinement (capabilities, hooks, host namespaces, devices)\n")
	fmt.Fprintf(w, "  --insecure-registry HOST[:PORT]  reach this registry over plain HTTP (repeatable; loopback always may)\n")
	fmt.Fprintf(w, "  --registry-mirror HOST=URL  pull HOST's images from this mirror first (repeatable, in order)\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'berthctl COMMAND -h' for a command's flags.\n")
}
