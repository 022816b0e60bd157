package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
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
	eng, local := o.eng, false
	if eng == nil {
		copts := []client.Opt{client.WithHostFromEnv(), client.WithAPIVersionNegotiation()}
		if o.host != "" {
			copts = append(copts, client.WithHost(o.host))
		}
		cli, err := client.New(copts...)
		if err != nil {
			return nil, fmt.Errorf("docker client: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		eng, local = cli, strings.HasPrefix(cli.DaemonHost(), "unix://")
	}
	r := &Runtime{eng: eng, scope: o.scope, stateDir: o.stateDir, local: local, daemonImages: o.daemonImages, ids: map[string]string{}, streams: map[string]*attachment{}}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		eng.Close()
		return nil, fmt.Errorf("docker daemon: %w", classify(err))
	}
	if info.Info.OSType != "" && info.Info.OSType != "linux" {
		eng.Close()
		return nil, fmt.Errorf("docker daemon runs %s containers: %w", info.Info.OSType, errdefs.ErrNotImplemented)
	}
	r.memTotal = uint64(max(info.Info.MemTotal, 0))
	r.cgroupns = true
	if cli, ok := eng.(*client.Client); ok {
		r.cgroupns = !versions.LessThan(cli.ClientVersion(), "1.41")
	}
	for _, so := range info.Info.SecurityOptions {
		if slices.Contains(strings.Split(so, ","), "name=userns") {
			m, ok := daemonMapping(info.Info.DockerRootDir, "/etc/subuid", "/etc/subgid")
			if !ok {
				eng.Close()
				return nil, fmt.Errorf("userns-remap daemon with data root %q: cannot tell its ID mapping: %w", info.Info.DockerRootDir, errdefs.ErrNotImplemented)
			}
			r.remap = m
		}
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
	}
	return r, nil
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
		a.close()
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

// Create implements driver.Runtime.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) error {
	if len(req.ID) < 2 {
		return invalid("container ID %q: Docker names are at least two characters long", req.ID)
	}
	if req.Image == "" && (req.Spec.Root == nil || req.Spec.Root.Path == "") {
		return invalid("no image given")
	}
	if err := unsupportedRequest(req); err != nil {
		return err
	}
	spec, err := copySpec(req.Spec)
	if err != nil {
		return err
	}
	idm := r.newIDMapper(req.ID)
	created := false
	defer func() { idm.done(created) }()
	t := &translation{remap: r.remap, cgroupns: r.cgroupns, mapBind: idm.mapBind}
	if err := translate(spec, t); err != nil {
		return err
	}
	if err := translateRawDevices(req.Devices, t); err != nil {
		return err
	}
	labels, err := newLabels(req.ID, r.scope, &record{Spec: spec, Labels: req.Labels})
	if err != nil {
		return err
	}
	t.config.Labels = labels
	t.config.Image = req.Image
	if req.ImageSource == nil && req.Image != "" && !r.daemonImages {
		return fmt.Errorf("image %q: the runtime has no image store, and this Docker backend was not opened WithDaemonImages to run the daemon's own images: %w", req.Image, errdefs.ErrFailedPrecondition)
	}
	if req.ImageSource != nil {
		t.config.Labels[LabelStoreImage] = req.ImageSource.ConfigDigest
	}
	t.host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	t.host.LogConfig = logConfig(r.logDriver, req.Log)
	attached := req.IO.Stdin != nil || req.IO.Stdout != nil || req.IO.Stderr != nil
	if req.IO.Stdin != nil {
		// Stdin stays open until the attached copy closes it.
		t.config.OpenStdin, t.config.StdinOnce, t.config.AttachStdin = true, true, true
	}
	t.config.AttachStdout, t.config.AttachStderr = req.IO.Stdout != nil, req.IO.Stderr != nil

	var res client.ContainerCreateResult
	for attempt := 0; ; attempt++ {
		if req.ImageSource != nil {
			if t.config.Image, err = r.ensureImage(ctx, req.ImageSource); err != nil {
				return err
			}
		}
		res, err = r.eng.ContainerCreate(ctx, client.ContainerCreateOptions{Name: req.ID, Config: t.config, HostConfig: t.host})
		// The image berth loaded may go between its load and this
		// create, with the last other container that used it (see
		// releaseImage): load it again.
		if req.ImageSource == nil || !errdefs.IsNotFound(err) || attempt == 2 {
			break
		}
	}
	if errdefs.IsConflict(err) {
		return fmt.Errorf("the Docker name %q is taken: %v: %w", req.ID, err, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return classify(err)
	}
	r.remember(req.ID, res.ID)
	fail := func(err error) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_, _ = r.eng.ContainerRemove(cctx, res.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		r.forget(req.ID)
		return err
	}
	if len(res.Warnings) > 0 {
		// Docker drops what the host cannot apply, with a warning: berth
		// does not run a container other than the one asked for.
		return fail(notImplemented("Docker would drop part of the spec: %s", strings.Join(res.Warnings, "; ")))
	}
	if attached {
		a, err := r.attach(ctx, res.ID, req.IO)
		if err != nil {
			return fail(classify(err))
		}
		r.mu.Lock()
		r.streams[req.ID] = a
		r.mu.Unlock()
	}
	created = true
	return nil
}

// copySpec deep-copies a spec: the translation adjusts the copy that
// becomes the record.
func copySpec(s *specs.Spec) (*specs.Spec, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, invalid("spec: %v", err)
	}
	var out specs.Spec
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, invalid("spec: %v", err)
	}
	return &out, nil
}

// Start implements driver.Runtime.
func (r *Runtime) Start(ctx context.Context, id string) error {
	return r.do(ctx, id, func(did string) error {
		_, err := r.eng.ContainerStart(ctx, did, client.ContainerStartOptions{})
		return err
	})
}

// Kill implements driver.Runtime. Docker resumes a paused container to
// deliver any signal but SIGKILL: berth refuses those instead of changing
// the container's state behind the caller's back.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	if sig != syscall.SIGKILL {
		c, err := r.inspect(ctx, id)
		if err != nil {
			return err
		}
		if c.State != nil && c.State.Status == container.StatePaused {
			return fmt.Errorf("Docker would resume the paused container to deliver signal %d: %w", sig, errdefs.ErrFailedPrecondition)
		}
	}
	return r.do(ctx, id, func(did string) error {
		_, err := r.eng.ContainerKill(ctx, did, client.ContainerKillOptions{Signal: fmt.Sprint(int(sig))})
		if err == nil || sig != syscall.SIGKILL {
			return err
		}
		// Docker refuses to kill a container whose init ended its leader
		// thread alone ("PID ... is zombie and can not be killed") while
		// its other threads run on: berth kills them through the cgroup.
		if killLeftInCgroup(ctx, did) != nil {
			return err
		}
		if c, ierr := r.eng.ContainerInspect(ctx, did, client.ContainerInspectOptions{}); ierr == nil && c.Container.State != nil && !c.Container.State.Running {
			return nil
		}
		return err
	})
}

// Delete implements driver.Runtime.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	err = r.do(ctx, id, func(did string) error {
		if err := killLeftInCgroup(ctx, did); err != nil {
			return err
		}
		_, err := r.eng.ContainerRemove(ctx, did, client.ContainerRemoveOptions{RemoveVolumes: true})
		return err
	})
	if err != nil {
		return err
	}
	if img := c.Config.Labels[LabelStoreImage]; img != "" {
		r.releaseImage(context.WithoutCancel(ctx), img)
	}
	r.forget(id)
	r.mu.Lock()
	a := r.streams[id]
	delete(r.streams, id)
	r.mu.Unlock()
	if a != nil {
		a.close()
	}
	if err := removeMounts(r.mountsDir(id)); err != nil {
		return fmt.Errorf("ID-mapped mounts: %w", err)
	}
	return nil
}

// Wait implements driver.Runtime. It works from any process, for any
// container of the scope, and across a restart of the daemon: a broken
// connection is retried until the daemon answers again (for up to
// reconnectTimeout).
func (r *Runtime) Wait(ctx context.Context, id string) (driver.ExitStatus, error) {
	var outage time.Time
	delay := 50 * time.Millisecond
	for {
		st, err := r.waitOnce(ctx, id)
		if err == nil {
			r.mu.Lock()
			a := r.streams[id]
			r.mu.Unlock()
			if a != nil {
				// The output is copied to the end before Wait returns.
				select {
				case <-a.done:
				case <-ctx.Done():
					return driver.ExitStatus{}, ctx.Err()
				}
			}
			return st, nil
		}
		if !errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return driver.ExitStatus{}, err
		}
		if outage.IsZero() {
			outage = time.Now()
		} else if time.Since(outage) > reconnectTimeout {
			return driver.ExitStatus{}, fmt.Errorf("daemon unreachable for %s: %w", reconnectTimeout, err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
		delay = min(2*delay, time.Second)
	}
}

// waitOnce registers for the container's next exit, then looks at its
// state: an exit before the registration shows there, one after it reaches
// the registration. No exit falls between the two.
func (r *Runtime) waitOnce(ctx context.Context, id string) (driver.ExitStatus, error) {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	if st, ok := exitOf(c); ok {
		return st, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	w := r.eng.ContainerWait(wctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	received := false
	defer func() {
		cancel()
		if received {
			return
		}
		// The client sends a result that came in meanwhile on an
		// unbuffered channel: take it, or its goroutine stays.
		go func() {
			select {
			case <-w.Result:
			case <-w.Error:
			}
		}()
	}()
	select {
	case err := <-w.Error:
		received = true
		return driver.ExitStatus{}, classify(err)
	default:
	}
	c, err = r.inspect(ctx, id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	if st, ok := exitOf(c); ok {
		return st, nil
	}
	select {
	case res := <-w.Result:
		received = true
		if res.Error != nil && res.Error.Message != "" {
			return driver.ExitStatus{}, fmt.Errorf("wait: %s: %w", res.Error.Message, errdefs.ErrUnknown)
		}
		return exitStatus(int(res.StatusCode), time.Now().UTC()), nil
	case err := <-w.Error:
		received = true
		if ctx.Err() != nil {
			return driver.ExitStatus{}, ctx.Err()
		}
		return driver.ExitStatus{}, classify(err)
	case <-ctx.Done():
		return driver.ExitStatus{}, ctx.Err()
	}
}

// exitOf returns the exit of a stopped container.
func exitOf(c *container.InspectResponse) (driver.ExitStatus, bool) {
	if c.State == nil || statusOf(c.State.Status) != driver.StatusStopped {
		return driver.ExitStatus{}, false
	}
	at, _ := time.Parse(time.RFC3339Nano, c.State.FinishedAt)
	return exitStatus(c.State.ExitCode, at.UTC()), true
}

// exitStatus reads Docker's exit code as a shell does: Docker reports
// 128+N for a process killed by signal N, and nothing else, so a process
// that exits 137 by itself looks killed by SIGKILL.
func exitStatus(code int, at time.Time) driver.ExitStatus {
	st := driver.ExitStatus{Code: code, ExitedAt: at}
	if code > 128 && code <= 128+64 {
		st.Signal = syscall.Signal(code - 128)
	}
	return st
}

// statuses maps Docker's container states to berth's. Berth sets no
// restart policy, so "restarting" is a daemon acting on its own.
var statuses = map[container.ContainerState]driver.Status{
	container.StateCreated:    driver.StatusCreated,
	container.StateRunning:    driver.StatusRunning,
	container.StatePaused:     driver.StatusPaused,
	container.StateRestarting: driver.StatusRunning,
	container.StateRemoving:   driver.StatusStopped,
	container.StateExited:     driver.StatusStopped,
	container.StateDead:       driver.StatusStopped,
}

func statusOf(s container.ContainerState) driver.Status {
	if st, ok := statuses[s]; ok {
		return st
	}
	return driver.StatusUnknown
}

// State implements driver.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (*driver.Info, error) {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	return infoOf(id, c)
}

func infoOf(id string, c *container.InspectResponse) (*driver.Info, error) {
	rec, err := readRecord(c.Config.Labels)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	info := &driver.Info{ID: id, Status: driver.StatusUnknown, Labels: rec.Labels, Spec: rec.Spec}
	info.CreatedAt, _ = time.Parse(time.RFC3339Nano, c.Created)
	info.CreatedAt = info.CreatedAt.UTC()
	if c.State != nil {
		info.Status = statusOf(c.State.Status)
		if info.Status == driver.StatusRunning || info.Status == driver.StatusPaused {
			info.Pid = c.State.Pid
		}
	}
	if st, ok := exitOf(c); ok {
		info.Exit = &st
	}
	return info, nil
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) {
	f := client.Filters{}.Add("label", LabelMarker+"=1", LabelScope+"="+r.scope)
	res, err := r.eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, classify(err)
	}
	var out []*driver.Info
	for _, s := range res.Items {
		id := s.Labels[LabelID]
		if !ours(s.Labels, id, r.scope) {
			continue
		}
		r.remember(id, s.ID)
		info, err := r.State(ctx, id)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", id, err)
		}
		out = append(out, info)
	}
	return out, nil
}
