package docker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/internal/fixture/dockerd"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// The daemons scripts/setup-docker.sh starts; BERTH_DOCKER_HOST and
// BERTH_DOCKER_USERNS_HOST point the tests elsewhere.
var (
	plainHost  = envOr("BERTH_DOCKER_HOST", "unix:///run/docker.sock")
	usernsHost = envOr("BERTH_DOCKER_USERNS_HOST", "unix:///run/berth-docker-userns.sock")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// requireDaemon skips (fails under CI=true) unless a daemon answers at
// host.
func requireDaemon(t *testing.T, host string) {
	t.Helper()
	fixture.RequireRoot(t)
	err := dockerd.Answers(context.Background(), host)
	fixture.Require(t, err == nil, fmt.Sprintf("no Docker daemon answers at %s (scripts/setup-docker.sh starts one): %v", host, err))
}

type harness struct {
	host   string
	policy runtime.SecurityPolicy
	states sync.Map // *runtime.Runtime -> state dir
}

// LateTerminalSize implements runtimetest.LateTerminalSize: Docker 20.10,
// the daemon of this project's tests (API 1.41), sizes a terminal only
// once its process runs (see the package's doc).
func (h *harness) LateTerminalSize() bool { return true }

// busyboxRef names the busybox image each harness runtime's store holds:
// containers are made from berth's store, so Docker only ever loads
// archives berth wrote.
const busyboxRef = "berth-fixture/busybox:latest"

// busyboxArchive is a docker-save archive of the busybox fixture, built
// once per test process.
var busyboxArchive = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "berth-busybox-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := fixture.Busybox(filepath.Join(dir, "rootfs")); err != nil {
		return nil, err
	}
	layer, err := imagetest.DirTar(filepath.Join(dir, "rootfs"))
	if err != nil {
		return nil, err
	}
	return imagetest.DockerSave(imagetest.NewImage([][]byte{layer}, "/bin/sh")), nil
})

// open returns a runtime whose scope is its state directory, as berthctl
// does: tests running in parallel never see each other's containers.
func (h *harness) open(t *testing.T, state string) *runtime.Runtime {
	e, err := Open(WithHost(h.host), WithScope(state))
	require.NoError(t, err)
	store, err := image.Open(filepath.Join(state, "images"))
	require.NoError(t, err)
	archive, err := busyboxArchive()
	require.NoError(t, err)
	_, err = store.ImportReader(context.Background(), bytes.NewReader(archive), image.ImportOptions{Tags: image.TagPolicy{Name: busyboxRef}})
	require.NoError(t, err)
	rt, err := runtime.New(e, runtime.WithStateDir(state), runtime.WithImageStore(store), runtime.WithSecurityPolicy(h.policy))
	require.NoError(t, err)
	h.states.Store(rt, state)
	t.Cleanup(func() { rt.Close() })
	return rt
}

func (h *harness) Open(t *testing.T) *runtime.Runtime {
	return h.open(t, fixture.TempDir(t))
}

func (h *harness) Reopen(t *testing.T, rt *runtime.Runtime) *runtime.Runtime {
	state, ok := h.states.Load(rt)
	require.True(t, ok)
	return h.open(t, state.(string))
}

func (h *harness) Config(t *testing.T, args ...string) *runtime.Config {
	return &runtime.Config{Spec: runtime.DefaultSpec("", args...), Image: busyboxRef}
}

// Leftovers: the Docker container (by name or by label) and what this
// process held for it (attached streams, cached ID).
func (h *harness) Leftovers(t *testing.T, rt *runtime.Runtime, id string) []string {
	var e *Runtime
	require.True(t, rt.As(&e))
	var cli *client.Client
	require.True(t, rt.As(&cli))
	ctx := context.Background()
	var left []string
	if _, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil {
		left = append(left, "docker container named "+id)
	}
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", LabelID+"="+id)})
	require.NoError(t, err)
	for _, c := range res.Items {
		left = append(left, "docker container "+c.ID+" labelled "+id)
	}
	if _, err := os.Lstat(e.mountsDir(id)); err == nil {
		left = append(left, "ID-mapped mounts in "+e.mountsDir(id))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.streams[id] != nil {
		left = append(left, "attached streams of "+id)
	}
	if e.ids[id] != "" {
		left = append(left, "cached Docker ID of "+id)
	}
	return left
}

// Track implements runtimetest.EngineTracker: the containerd task Docker
// made for the container (its bundle) and the shim serving it, which
// Docker no longer names once it removed the container. They are looked
// for on this host only; a shim quits a moment after its task is deleted.
func (h *harness) Track(t *testing.T, rt *runtime.Runtime, id string) func() []string {
	var cli *client.Client
	require.True(t, rt.As(&cli))
	c, err := cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	require.NoError(t, err)
	did := c.Container.ID
	return func() []string {
		var left []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			left = nil
			bundles, _ := filepath.Glob("/run/containerd/io.containerd.runtime.v2.task/*/" + did)
			for _, b := range bundles {
				left = append(left, "containerd task bundle "+b)
			}
			cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range cmdlines {
				b, err := os.ReadFile(p)
				if err == nil && bytes.Contains(b, []byte("containerd-shim")) && bytes.Contains(b, []byte("\x00-id\x00"+did+"\x00")) {
					left = append(left, "containerd shim "+filepath.Dir(p)+" serving "+did)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				return left
			}
		}
	}
}

func TestConformance(t *testing.T) {
	requireDaemon(t, plainHost)
	runtimetest.Run(t, &harness{host: plainHost})
}

// The userns-remap daemon: every container in the daemon's user namespace.
func TestConformanceUserns(t *testing.T) {
	requireDaemon(t, usernsHost)
	runtimetest.Run(t, &harness{host: usernsHost})
}
