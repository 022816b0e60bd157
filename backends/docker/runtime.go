package docker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

const (
	// openTimeout bounds Open's first call to the daemon.
	openTimeout = 30 * time.Second
	// cleanupTimeout bounds the removal of a container whose creation
	// failed half-way.
	cleanupTimeout = 30 * time.Second
	// reconnectTimeout is how long Wait waits for a daemon that went away
	// (a restart) to answer again.
	reconnectTimeout = 2 * time.Minute
)

// Runtime is the Docker backend. It implements driver.Runtime; wrap it
// with runtime.New. It is safe for concurrent use.
type Runtime struct {
	eng      engine
	scope    string
	stateDir string
	// local: the daemon is on this host (a unix socket), so the pids it
	// reports are this host's.
	local bool

	// daemonImages: Config.Image may name the daemon's own images when
	// the runtime has no store (WithDaemonImages).
	daemonImages bool

	caps     driver.Capabilities
	remap    *idMapping // the userns-remap mapping, nil on a plain daemon
	cgroupns bool       // the API has cgroup namespaces (1.41+)
	memTotal uint64     // the daemon host's memory: Docker's "no limit"
	// logDriver is the daemon's default log driver.
	logDriver string

	mu sync.Mutex
	// ids caches berth ID -> Docker ID, so that an operation costs one
	// call; a stale entry (the container was removed) is looked up again.
	ids map[string]string
	// streams holds the IO this process copies for the containers it
	// created with readers or writers.
	streams map[string]*attachment
	// sizes caches, by Docker ID, the first terminal size Start sets
	// (nil: none), which never changes for a Docker container.
	sizes map[string]*specs.Box
}

// Open connects to a Docker daemon and returns the backend. It asks the
// daemon what it can do once (Capabilities reflect it: user namespaces
// only on a userns-remap daemon, logs unless its log driver is "none").
func Open(opts ...Option) (*Runtime, error) {
	o := options{scope: DefaultScope, stateDir: DefaultStateDir}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	eng, local, err := newEngine(&o)
	if err != nil {
		return nil, err
	}
	r := &Runtime{eng: eng, scope: o.scope, stateDir: o.stateDir, local: local, daemonImages: o.daemonImages, ids: map[string]string{}, streams: map[string]*attachment{}, sizes: map[string]*specs.Box{}}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		eng.Close()
		return nil, fmt.Errorf("docker daemon: %w", classify(err))
	}
	if err := r.learnDaemon(&info.Info); err != nil {
		eng.Close()
		return nil, err
	}
	if err := r.removeStaleMounts(ctx); err != nil {
		eng.Close()
		return nil, err
	}
	r.logDriver = info.Info.LoggingDriver
	r.caps = driver.Capabilities{
		Exec: true, Pause: true, Update: true, Stats: true, RawBlock: true,
		Logs:                info.Info.LoggingDriver != "none",
		UserNamespace:       r.remap != nil,
		UserNamespaceShared: r.remap != nil,
		CgroupNamespace:     r.cgroupns,
		// The container's mount namespace is reached through its init's
		// pid: only on the daemon's host (hotattach_linux.go).
		HotAttach: r.local,
		Snapshot:  true,
		Events:    true,
		Terminal:  true,
		Attach:    true,
	}
	return r, nil
}

// newEngine returns the engine the options give, else a client of the
// daemon they (or the environment) name, and whether that daemon is local.
func newEngine(o *options) (engine, bool, error) {
	if o.eng != nil {
		return o.eng, false, nil
	}
	copts := []client.Opt{client.WithHostFromEnv(), client.WithAPIVersionNegotiation()}
	if o.host != "" {
		copts = append(copts, client.WithHost(o.host))
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, false, fmt.Errorf("docker client: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return cli, strings.HasPrefix(cli.DaemonHost(), "unix://"), nil
}

// learnDaemon keeps what the daemon's info tells: its memory, whether the
// API has cgroup namespaces, its userns-remap mapping. It refuses a daemon
// of other than Linux containers, and a remapping one whose mapping it
// cannot tell.
func (r *Runtime) learnDaemon(info *system.Info) error {
	if info.OSType != "" && info.OSType != "linux" {
		return fmt.Errorf("docker daemon runs %s containers: %w", info.OSType, errdefs.ErrNotImplemented)
	}
	r.memTotal = uint64(max(info.MemTotal, 0))
	r.cgroupns = true
	if cli, ok := r.eng.(*client.Client); ok {
		r.cgroupns = !versions.LessThan(cli.ClientVersion(), "1.41")
	}
	for _, so := range info.SecurityOptions {
		if slices.Contains(strings.Split(so, ","), "name=userns") {
			m, ok := daemonMapping(info.DockerRootDir, "/etc/subuid", "/etc/subgid")
			if !ok {
				return fmt.Errorf("userns-remap daemon with data root %q: cannot tell its ID mapping: %w", info.DockerRootDir, errdefs.ErrNotImplemented)
			}
			r.remap = m
		}
	}
	return nil
}

// Name implements driver.Runtime.
func (r *Runtime) Name() string { return "docker" }

// The optional parts of the driver contract Docker serves (and, on Linux,
// driver.VolumeAttacher in hotattach_linux.go); it has no root disks.
var (
	_ driver.Snapshotter = (*Runtime)(nil)
	_ driver.Execer      = (*Runtime)(nil)
	_ driver.Pauser      = (*Runtime)(nil)
	_ driver.Updater     = (*Runtime)(nil)
	_ driver.StatsReader = (*Runtime)(nil)
	_ driver.Logger      = (*Runtime)(nil)
	_ driver.Attacher    = (*Runtime)(nil)
)

// Capabilities implements driver.Runtime.
func (r *Runtime) Capabilities() driver.Capabilities { return r.caps }

// Scope returns the runtime's scope (see WithScope).
func (r *Runtime) Scope() string { return r.scope }

// As implements driver.Runtime: **Runtime, and **client.Client for the
// Engine API client itself.
func (r *Runtime) As(i any) bool {
	switch p := i.(type) {
	case **Runtime:
		*p = r
		return true
	case **client.Client:
		c, ok := r.eng.(*client.Client)
		if ok {
			*p = c
		}
		return ok
	}
	return false
}

// Close implements driver.Runtime. Containers keep running; output this
// process was copying stops.
func (r *Runtime) Close() error {
	r.mu.Lock()
	streams := r.streams
	r.streams = map[string]*attachment{}
	r.mu.Unlock()
	for _, a := range streams {
		a.stop()
	}
	return r.eng.Close()
}

func (r *Runtime) cached(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *Runtime) remember(id, dockerID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[id] = dockerID
}

func (r *Runtime) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ids, id)
}

// inspect returns the Docker container of berth ID id in this scope. Docker
// also resolves names as ID prefixes: the labels tell which is ours.
func (r *Runtime) inspect(ctx context.Context, id string) (*container.InspectResponse, error) {
	if full := r.cached(id); full != "" {
		res, err := r.eng.ContainerInspect(ctx, full, client.ContainerInspectOptions{})
		switch {
		case err == nil:
			return &res.Container, nil
		case !errdefs.IsNotFound(err):
			return nil, classify(err)
		}
		r.forget(id)
	}
	res, err := r.eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if errdefs.IsNotFound(err) {
		return nil, notFound()
	}
	if err != nil {
		return nil, classify(err)
	}
	if res.Container.Config == nil || !ours(res.Container.Config.Labels, id, r.scope) {
		return nil, notFound()
	}
	r.remember(id, res.Container.ID)
	return &res.Container, nil
}

// do runs op on the Docker ID of container id: the cached one first, and
// if Docker no longer knows it, the one looked up again.
func (r *Runtime) do(ctx context.Context, id string, op func(dockerID string) error) error {
	if full := r.cached(id); full != "" {
		err := op(full)
		if !errdefs.IsNotFound(err) {
			return classify(err)
		}
		r.forget(id)
	}
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	return classify(op(c.ID))
}
