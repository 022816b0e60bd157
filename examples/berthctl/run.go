package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime"
)

// createFlags are the flags run and create share.
type createFlags struct {
	name     string
	rootfs   string
	image    string
	userns   bool
	memory   byteSize
	cpus     cpus
	env      envList
	stdin    bool
	tty      bool
	volumes  volumeList
	diskSize byteSize
	logSize  byteSize
	logFiles optInt
}

func (f *createFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "container `ID` (default: 12 random hex digits)")
	fs.StringVar(&f.rootfs, "rootfs", "", "root filesystem `DIR` (this or --image)")
	fs.StringVar(&f.image, "image", "", "image `REF` to run (this or --rootfs; backends that take images)")
	fs.BoolVar(&f.userns, "userns", false, "run in a private user namespace")
	fs.Var(&f.memory, "memory", "memory limit in `BYTES` (suffixes k, m, g, t, p)")
	fs.Var(&f.cpus, "cpus", "CPU quota as a number `N` of CPUs (e.g. 0.5)")
	fs.Var(&f.env, "env", "environment variable `K=V` (repeatable)")
	fs.BoolVar(&f.stdin, "i", false, "attach standard input")
	fs.BoolVar(&f.tty, "t", false, "give the container's init a terminal (-it: type into it, as docker run -it)")
	fs.Var(&f.diskSize, "disk-size", "size of the container's own root disk in `BYTES` (backends with root disks: parallels)")
	fs.Var(&f.logSize, "log-max-size", "cap each file of the container's log at `BYTES` (default 10m)")
	fs.Var(&f.logFiles, "log-max-files", "keep at most `N` log files, the current one included (default 2)")
	fs.Var(&f.volumes, "volume", "attach a volume `SRC:DST[:ro][:raw]` (block device, image file or directory; tmpfs:DST:size=BYTES)")
}

// config builds the container's config from the flags and the command.
func (f *createFlags) config(name string, args []string) (string, *runtime.Config, error) {
	switch {
	case f.rootfs == "" && f.image == "":
		return "", nil, usageErrorf("%s: --rootfs or --image is required", name)
	case f.rootfs != "" && f.image != "":
		return "", nil, usageErrorf("%s: --rootfs and --image exclude each other", name)
	}
	if len(args) == 0 && f.image == "" {
		return "", nil, usageErrorf("%s: no command given (berthctl %s ... -- CMD [ARG...])", name, name)
	}
	// With an image the spec has no root filesystem directory.
	var rootfs string
	var err error
	if f.rootfs != "" {
		if rootfs, err = filepath.Abs(f.rootfs); err != nil {
			return "", nil, usageErrorf("%s: --rootfs %q: %v", name, f.rootfs, err)
		}
	}
	id := f.name
	if id == "" {
		if id, err = randomID(); err != nil {
			return "", nil, err
		}
	}
	spec := runtime.DefaultSpec(rootfs, args...)
	spec.Process.Env = append(spec.Process.Env, f.env...)
	spec.Process.Terminal = f.tty
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	if f.memory.set {
		n := f.memory.n
		spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &n}
	}
	if f.cpus.set {
		q, p := f.cpus.quota(), uint64(cpuPeriod)
		spec.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &q, Period: &p}
	}
	cfg := &runtime.Config{Spec: spec, Image: f.image, UserNamespace: f.userns, Volumes: f.volumes}
	if f.diskSize.set {
		cfg.DiskSize = f.diskSize.n
	}
	if f.logSize.set {
		if f.logSize.n == 0 {
			return "", nil, usageErrorf("%s: --log-max-size 0: the log needs room", name)
		}
		cfg.Log.MaxSize = f.logSize.n
	}
	if f.logFiles.set {
		if f.logFiles.n < 1 || f.logFiles.n > 100 {
			return "", nil, usageErrorf("%s: --log-max-files %d: 1 to 100", name, f.logFiles.n)
		}
		cfg.Log.MaxFiles = int(f.logFiles.n)
	}
	return id, cfg, nil
}

// randomID is a fresh container ID: 12 hex digits, as docker shows them.
func randomID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("container ID: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (a *app) cmdCreate(fs *flag.FlagSet, args []string) (int, error) {
	var f createFlags
	f.register(fs)
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	id, cfg, err := f.config(fs.Name(), fs.Args())
	if err != nil {
		return 0, err
	}
	if f.stdin {
		cfg.IO.Stdin = a.stdin
	}
	rt, err := a.runtime()
	if err != nil {
		return 0, err
	}
	c, err := rt.Create(context.Background(), id, cfg)
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(a.stdout, c.ID())
	return 0, nil
}

func (a *app) cmdRun(fs *flag.FlagSet, args []string) (int, error) {
	var f createFlags
	f.register(fs)
	rm := fs.Bool("rm", false, "delete the container once it exits")
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	id, cfg, err := f.config(fs.Name(), fs.Args())
	if err != nil {
		return 0, err
	}
	cfg.IO = runtime.IO{Stdout: a.stdout, Stderr: a.stderr}
	if f.stdin {
		cfg.IO.Stdin = a.stdin
	}
	// Caught from before the container exists, so that a signal arriving
	// meanwhile reaches it instead of killing berthctl half-way (and
	// before berthctl's terminal goes raw, so that no signal ends
	// berthctl with its terminal left so).
	proxy := catchSignals()
	defer proxy.stop()
	var term *callerTerminal
	if f.tty {
		if term, err = a.openTerminal(f.stdin); err != nil {
			return 0, err
		}
		defer term.close()
		cfg.Spec.Process.ConsoleSize = term.size()
	}
	// run stays in the foreground until the container exits: berthctl
	// itself can be the container's parent, with no supervisor.
	a.attached = true
	ctx, report := phases(context.Background(), a.stderr)
	defer report()
	sp := phase.Begin(ctx)
	rt, err := a.runtime()
	if err != nil {
		return 0, err
	}
	sp.Mark("open")
	c, err := rt.Create(ctx, id, cfg)
	if err != nil {
		return 0, err
	}
	proxy.forward(func(s syscall.Signal) error { return c.Kill(ctx, s) })
	if term != nil {
		term.follow(ctx, c.Resize)
	}
	code, err := startAndWait(ctx, c)
	if *rm {
		if derr := c.Delete(ctx, runtime.DeleteOptions{Force: true}); derr != nil && err == nil {
			err = derr
		}
	}
	return code, err
}

// phasesEnv, set to anything, has run print how long each phase of its
// work took (internal/phase) on stderr, once the container is deleted.
const phasesEnv = "BERTH_PHASES"

// phases returns ctx carrying a phase recorder when phasesEnv asks for one,
// and the function that prints what it recorded to w, one "phase NAME MS"
// line each, in the order they ran.
func phases(ctx context.Context, w io.Writer) (context.Context, func()) {
	if os.Getenv(phasesEnv) == "" {
		return ctx, func() {}
	}
	rec := &phase.Recorder{}
	return phase.NewContext(ctx, rec), func() {
		for _, p := range rec.Phases() {
			fmt.Fprintf(w, "phase %s %.3f\n", p.Name, float64(p.Total)/1e6)
		}
	}
}

func startAndWait(ctx context.Context, c *runtime.Container) (int, error) {
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	st, err := c.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return exitCode(c.ID(), st)
}

// exitCode passes a container's or process's exit code through.
func exitCode(id string, st runtime.ExitStatus) (int, error) {
	if st.Code < 0 || st.Code > 255 {
		return 0, fmt.Errorf("container %q: exit status lost (code %d): %w", id, st.Code, errdefs.ErrUnknown)
	}
	return st.Code, nil
}

func (a *app) cmdExec(fs *flag.FlagSet, args []string) (int, error) {
	var (
		env  envList
		cwd  string
		user string
		in   bool
		tty  bool
	)
	fs.Var(&env, "env", "environment variable `K=V` (repeatable)")
	fs.BoolVar(&in, "i", false, "forward standard input to the process")
	fs.BoolVar(&tty, "t", false, "give the process a terminal (-it: type into it, as docker exec -it)")
	fs.StringVar(&cwd, "w", "", "working `DIR` (absolute)")
	fs.StringVar(&user, "u", "", "user `UID[:GID]`")
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	if fs.NArg() == 0 {
		return 0, usageErrorf("exec: no container ID given")
	}
	id, cmdArgs := fs.Arg(0), commandArgs(fs.Args()[1:])
	if len(cmdArgs) == 0 {
		return 0, usageErrorf("exec: no command given (berthctl exec ... ID -- CMD [ARG...])")
	}
	if cwd != "" && !filepath.IsAbs(cwd) {
		return 0, usageErrorf("exec: working directory %q is not absolute", cwd)
	}
	ps := &runtime.ProcessSpec{Args: cmdArgs, Env: env, Cwd: cwd, Terminal: tty}
	if user != "" {
		u, err := parseUser(user)
		if err != nil {
			return 0, err
		}
		ps.User = u
	}
	ctx := context.Background()
	c, err := a.container(ctx, id)
	if err != nil {
		return 0, err
	}
	proxy := catchSignals()
	defer proxy.stop()
	var term *callerTerminal
	if tty {
		if term, err = a.openTerminal(in); err != nil {
			return 0, err
		}
		defer term.close()
		ps.ConsoleSize = term.size()
	}
	pio := runtime.IO{Stdout: a.stdout, Stderr: a.stderr}
	if in {
		pio.Stdin = a.stdin
	}
	p, err := c.Exec(ctx, ps, pio)
	if err != nil {
		return 0, err
	}
	proxy.forward(func(s syscall.Signal) error { return p.Signal(ctx, s) })
	if term != nil {
		term.follow(ctx, p.Resize)
	}
	st, err := p.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return exitCode(id, st)
}
