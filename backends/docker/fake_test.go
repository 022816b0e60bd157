package docker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
)

// fakeEngine is an in-memory stand-in for the Engine API calls the backend
// makes: enough of Docker's behaviour (names, labels, states, 404/409
// errors, wait conditions, attach streams) for fast unit tests. The real
// daemon is tested by the conformance suite.
type fakeEngine struct {
	mu         sync.Mutex
	info       system.Info
	containers map[string]*fakeContainer // by Docker ID
	next       int
	warnings   []string // returned by the next create
	// waitBreaks makes that many ContainerWait calls fail as a broken
	// connection does when the daemon restarts.
	waitBreaks int
	calls      []string
	images     *fakeImages
	// streams are the event streams handed out, in order.
	streams []*fakeEvents
}

// fakeEvents is one event stream: the test sends its messages, and breaks
// it with an error as a restarting daemon does.
type fakeEvents struct {
	opts client.EventsListOptions
	msgs chan events.Message
	errs chan error
}

type fakeContainer struct {
	id, name string
	config   *container.Config
	host     *container.HostConfig
	state    container.ContainerState
	exitCode int
	pid      int
	created  time.Time
	finished time.Time
	exited   chan struct{} // closed and replaced at each exit
	output   []byte        // what the container "printed", multiplexed
}

func newFake() *fakeEngine {
	return &fakeEngine{
		info:       system.Info{OSType: "linux", LoggingDriver: "json-file", MemTotal: 8 << 30, DockerRootDir: "/var/lib/docker"},
		containers: map[string]*fakeContainer{},
	}
}

func (f *fakeEngine) record(call string) {
	f.calls = append(f.calls, call)
}

// lookup resolves a reference as Docker does: full ID, name, ID prefix.
func (f *fakeEngine) lookup(ref string) (*fakeContainer, error) {
	if c, ok := f.containers[ref]; ok {
		return c, nil
	}
	for _, c := range f.containers {
		if c.name == ref {
			return c, nil
		}
	}
	for id, c := range f.containers {
		if strings.HasPrefix(id, ref) {
			return c, nil
		}
	}
	return nil, cerrdefs.ErrNotFound.WithMessage("No such container: " + ref)
}

// add puts a container straight into the fake, as another tool would.
func (f *fakeEngine) add(id, name string, labels map[string]string, state container.ContainerState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = &fakeContainer{id: id, name: name, config: &container.Config{Labels: labels}, host: &container.HostConfig{},
		state: state, created: time.Now(), exited: make(chan struct{})}
}

func (f *fakeEngine) Info(ctx context.Context, _ client.InfoOptions) (client.SystemInfoResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return client.SystemInfoResult{Info: f.info}, nil
}

func (f *fakeEngine) Events(ctx context.Context, o client.EventsListOptions) client.EventsResult {
	s := &fakeEvents{opts: o, msgs: make(chan events.Message), errs: make(chan error, 1)}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.mu.Unlock()
	context.AfterFunc(ctx, func() {
		select {
		case s.errs <- ctx.Err():
		default:
		}
	})
	return client.EventsResult{Messages: s.msgs, Err: s.errs}
}

// stream returns the n-th event stream handed out (from 0), once it is.
func (f *fakeEngine) stream(n int) *fakeEvents {
	for {
		f.mu.Lock()
		if len(f.streams) > n {
			s := f.streams[n]
			f.mu.Unlock()
			return s
		}
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (f *fakeEngine) ContainerCreate(ctx context.Context, o client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create")
	for _, c := range f.containers {
		if c.name == o.Name {
			return client.ContainerCreateResult{}, cerrdefs.ErrConflict.WithMessage("name in use")
		}
	}
	f.next++
	id := fmt.Sprintf("%064x", f.next)
	f.containers[id] = &fakeContainer{id: id, name: o.Name, config: o.Config, host: o.HostConfig, state: container.StateCreated,
		created: time.Now(), exited: make(chan struct{})}
	w := f.warnings
	f.warnings = nil
	return client.ContainerCreateResult{ID: id, Warnings: w}, nil
}

func (f *fakeEngine) ContainerAttach(ctx context.Context, id string, o client.ContainerAttachOptions) (client.ContainerAttachResult, error) {
	f.mu.Lock()
	c, err := f.lookup(id)
	var ch chan struct{}
	if err == nil {
		ch = c.exited // the next exit, whenever the goroutine runs
	}
	f.mu.Unlock()
	if err != nil {
		return client.ContainerAttachResult{}, err
	}
	ours, theirs := net.Pipe()
	go func() {
		<-ch
		f.mu.Lock()
		out := c.output
		f.mu.Unlock()
		_, _ = theirs.Write(out)
		theirs.Close()
	}()
	return client.ContainerAttachResult{HijackedResponse: client.NewHijackedResponse(ours, "")}, nil
}

func (f *fakeEngine) ContainerStart(ctx context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start " + id)
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerStartResult{}, err
	}
	if c.state != container.StateCreated {
		return client.ContainerStartResult{}, cerrdefs.ErrConflict.WithMessage("not created")
	}
	c.state, c.pid = container.StateRunning, 4242
	return client.ContainerStartResult{}, nil
}

// exit ends a running container with code (as its process would).
func (f *fakeEngine) exit(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	c.state, c.exitCode, c.pid, c.finished = container.StateExited, code, 0, time.Now()
	close(c.exited)
	c.exited = make(chan struct{})
}

func (f *fakeEngine) ContainerWait(ctx context.Context, id string, o client.ContainerWaitOptions) client.ContainerWaitResult {
	res, errc := make(chan container.WaitResponse, 1), make(chan error, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("wait")
	if f.waitBreaks > 0 {
		f.waitBreaks--
		errc <- io.ErrUnexpectedEOF
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	c, err := f.lookup(id)
	if err != nil {
		errc <- err
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	if o.Condition != container.WaitConditionNextExit {
		errc <- fmt.Errorf("fake: only next-exit waits")
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	ch := c.exited
	go func() {
		select {
		case <-ch:
			f.mu.Lock()
			code := c.exitCode
			f.mu.Unlock()
			res <- container.WaitResponse{StatusCode: int64(code)}
		case <-ctx.Done():
			errc <- ctx.Err()
		}
	}()
	return client.ContainerWaitResult{Result: res, Error: errc}
}

func (f *fakeEngine) ContainerKill(ctx context.Context, id string, o client.ContainerKillOptions) (client.ContainerKillResult, error) {
	f.mu.Lock()
	f.record("kill " + id + " " + o.Signal)
	c, err := f.lookup(id)
	running := err == nil && (c.state == container.StateRunning || c.state == container.StatePaused)
	f.mu.Unlock()
	if err != nil {
		return client.ContainerKillResult{}, err
	}
	if !running {
		return client.ContainerKillResult{}, cerrdefs.ErrConflict.WithMessage("is not running")
	}
	sig, _ := strconv.Atoi(o.Signal)
	f.exit(c.id, 128+sig)
	return client.ContainerKillResult{}, nil
}

func (f *fakeEngine) ContainerRemove(ctx context.Context, id string, o client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remove " + id)
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerRemoveResult{}, err
	}
	if !o.Force && (c.state == container.StateRunning || c.state == container.StatePaused) {
		return client.ContainerRemoveResult{}, cerrdefs.ErrConflict.WithMessage("running")
	}
	delete(f.containers, c.id)
	return client.ContainerRemoveResult{}, nil
}

func (f *fakeEngine) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("inspect " + id)
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerInspectResult{}, err
	}
	st := &container.State{Status: c.state, Pid: c.pid, ExitCode: c.exitCode, Running: c.state == container.StateRunning}
	if !c.finished.IsZero() {
		st.FinishedAt = c.finished.UTC().Format(time.RFC3339Nano)
	}
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.id, Name: "/" + c.name, Created: c.created.UTC().Format(time.RFC3339Nano), State: st, Config: c.config, HostConfig: c.host,
	}}, nil
}

func (f *fakeEngine) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out client.ContainerListResult
	for _, c := range f.containers {
		match := true
		for want := range o.Filters["label"] {
			k, v, _ := strings.Cut(want, "=")
			if got, ok := c.config.Labels[k]; !ok || got != v {
				match = false
			}
		}
		if match {
			out.Items = append(out.Items, container.Summary{ID: c.id, Names: []string{"/" + c.name}, Labels: c.config.Labels, State: c.state})
		}
	}
	return out, nil
}

func (f *fakeEngine) ContainerPause(ctx context.Context, id string, _ client.ContainerPauseOptions) (client.ContainerPauseResult, error) {
	return client.ContainerPauseResult{}, f.transition(id, container.StateRunning, container.StatePaused)
}

func (f *fakeEngine) ContainerUnpause(ctx context.Context, id string, _ client.ContainerUnpauseOptions) (client.ContainerUnpauseResult, error) {
	return client.ContainerUnpauseResult{}, f.transition(id, container.StatePaused, container.StateRunning)
}

func (f *fakeEngine) transition(id string, from, to container.ContainerState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(id)
	if err != nil {
		return err
	}
	if c.state != from {
		return cerrdefs.ErrConflict.WithMessage("container is " + string(c.state))
	}
	c.state = to
	return nil
}

func (f *fakeEngine) ContainerUpdate(ctx context.Context, id string, o client.ContainerUpdateOptions) (client.ContainerUpdateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerUpdateResult{}, err
	}
	r := o.Resources
	if r.Memory != 0 {
		c.host.Memory = r.Memory
	}
	if r.MemorySwap != 0 {
		c.host.MemorySwap = r.MemorySwap
	}
	if r.PidsLimit != nil {
		c.host.PidsLimit = r.PidsLimit
	}
	w := f.warnings
	f.warnings = nil
	return client.ContainerUpdateResult{Warnings: w}, nil
}

func (f *fakeEngine) ContainerStats(ctx context.Context, id string, _ client.ContainerStatsOptions) (client.ContainerStatsResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerStatsResult{}, err
	}
	var s container.StatsResponse
	s.MemoryStats.Usage = 1 << 20
	s.MemoryStats.Limit = uint64(c.host.Memory)
	if c.host.Memory == 0 {
		s.MemoryStats.Limit = uint64(f.info.MemTotal) // Docker shows the host's memory
	}
	s.CPUStats.CPUUsage.TotalUsage = 12345
	s.PidsStats.Current = 1
	s.PidsStats.Limit = 1<<64 - 1
	b, _ := json.Marshal(s)
	return client.ContainerStatsResult{Body: io.NopCloser(strings.NewReader(string(b)))}, nil
}

func (f *fakeEngine) ContainerLogs(ctx context.Context, id string, _ client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(id)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader(string(c.output))), nil
}

func (f *fakeEngine) ContainerResize(ctx context.Context, id string, o client.ContainerResizeOptions) (client.ContainerResizeResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(id)
	if err != nil {
		return client.ContainerResizeResult{}, err
	}
	f.record(fmt.Sprintf("resize %s %dx%d", c.name, o.Height, o.Width))
	if c.state != container.StateRunning && c.state != container.StatePaused {
		return client.ContainerResizeResult{}, cerrdefs.ErrConflict.WithMessage("not running")
	}
	return client.ContainerResizeResult{}, nil
}

func (f *fakeEngine) ExecResize(ctx context.Context, id string, _ client.ExecResizeOptions) (client.ExecResizeResult, error) {
	return client.ExecResizeResult{}, cerrdefs.ErrNotImplemented.WithMessage("fake: no exec")
}

func (f *fakeEngine) ExecCreate(ctx context.Context, id string, _ client.ExecCreateOptions) (client.ExecCreateResult, error) {
	return client.ExecCreateResult{}, cerrdefs.ErrNotImplemented.WithMessage("fake: no exec")
}

func (f *fakeEngine) ExecAttach(ctx context.Context, id string, _ client.ExecAttachOptions) (client.ExecAttachResult, error) {
	return client.ExecAttachResult{}, cerrdefs.ErrNotImplemented.WithMessage("fake: no exec")
}

func (f *fakeEngine) ExecInspect(ctx context.Context, id string, _ client.ExecInspectOptions) (client.ExecInspectResult, error) {
	return client.ExecInspectResult{}, cerrdefs.ErrNotImplemented.WithMessage("fake: no exec")
}

func (f *fakeEngine) Close() error { return nil }

// multiplexed frames out and errOut as Docker's attach and logs streams do:
// a header of the stream (1 stdout, 2 stderr), three zero bytes and the
// big-endian length, then the bytes.
func multiplexed(out, errOut string) []byte {
	var b []byte
	for i, p := range []string{out, errOut} {
		if p == "" {
			continue
		}
		hdr := make([]byte, 8)
		hdr[0] = byte(i + 1)
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
		b = append(append(b, hdr...), p...)
	}
	return b
}

func (f *fakeEngine) ContainerExport(ctx context.Context, id string, _ client.ContainerExportOptions) (client.ContainerExportResult, error) {
	return nil, cerrdefs.ErrNotImplemented
}
