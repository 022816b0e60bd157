package libcontainer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// openOn opens the embedded engine on root under policy p.
func openOn(t *testing.T, root string, p runtime.SecurityPolicy) *runtime.Runtime {
	e, err := libcontainer.Open(root)
	require.NoError(t, err)
	rt, err := runtime.New(e, runtime.WithStateDir(root), runtime.WithSecurityPolicy(p))
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt
}

// runOut creates, starts and waits for a container of cfg, and returns its
// output.
func runOut(ctx context.Context, t *testing.T, rt *runtime.Runtime, cfg *runtime.Config) string {
	t.Helper()
	var out fixture.SyncBuffer
	cfg.IO = runtime.IO{Stdout: &out, Stderr: &out}
	c, err := rt.Create(ctx, runtimetest.NewID("run"), cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	return out.String()
}

func withoutNamespaces(s *specs.Spec, types ...specs.LinuxNamespaceType) *specs.Spec {
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return slices.Contains(types, n.Type) })
	return s
}

// AllowHostNamespaces runs a container in the host's network, PID and IPC
// namespaces (the caller's); without it the spec is refused, and so is
// joining such a container: a runtime without the switch never reaches
// the host's namespaces through another container.
func TestHostNamespacesSwitch(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	host := openOn(t, root, runtime.SecurityPolicy{AllowHostNamespaces: true})
	strict := openOn(t, root, runtime.SecurityPolicy{})
	hostNS := func(types ...string) string {
		var lines []string
		for _, name := range types {
			l, err := os.Readlink("/proc/self/ns/" + name)
			require.NoError(t, err)
			lines = append(lines, l)
		}
		return strings.Join(lines, "\n") + "\n"
	}
	types := []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace}
	spec := withoutNamespaces(runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc"), types...)
	_, err := strict.Create(ctx, runtimetest.NewID("hostns"), &runtime.Config{Spec: spec})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	require.Contains(t, err.Error(), "AllowHostNamespaces")
	require.Equal(t, hostNS("net", "pid", "ipc"), runOut(ctx, t, host, &runtime.Config{Spec: spec}))
	mnt := withoutNamespaces(runtime.DefaultSpec(rootfs, "/bin/true"), specs.MountNamespace)
	_, err = host.Create(ctx, runtimetest.NewID("hostmnt"), &runtime.Config{Spec: mnt})
	require.Truef(t, errdefs.IsPermissionDenied(err), "the host's mount namespace: %v", err)

	target, err := host.Create(ctx, runtimetest.NewID("hostnet"), &runtime.Config{Spec: withoutNamespaces(runtime.DefaultSpec(rootfs, "/bin/true"), specs.NetworkNamespace)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	joiner := func() *runtime.Config {
		s := runtime.DefaultSpec(rootfs, "/bin/readlink", "/proc/self/ns/net")
		s.Hostname = ""
		return &runtime.Config{Spec: s, Join: map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: target.ID()}}
	}
	id := runtimetest.NewID("through")
	_, err = strict.Create(ctx, id, joiner())
	require.Truef(t, errdefs.IsPermissionDenied(err), "joining the host's network through a container: %v", err)
	_, err = strict.Get(ctx, id)
	require.True(t, errdefs.IsNotFound(err))
	require.Equal(t, hostNS("net"), runOut(ctx, t, host, joiner()))
}

// A container whose init moved to another network namespace after it was
// created (a privileged tenant's init can) is not followed there: neither
// NamespacePath nor a join reaches the namespace the tenant chose. Its
// other namespaces are still its own.
func TestJoinRefusesAMovedInit(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	rt := openOn(t, root, runtime.SecurityPolicy{AllowPrivileged: true})
	spec := runtime.DefaultSpec(rootfs, "/berth-tenant/tenant", "unshare-net")
	c := spec.Process.Capabilities
	c.Bounding, c.Effective, c.Permitted = append(c.Bounding, "CAP_SYS_ADMIN"), append(c.Effective, "CAP_SYS_ADMIN"), append(c.Permitted, "CAP_SYS_ADMIN")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/berth-tenant", Type: "bind", Source: fixture.TenantTool(t), Options: []string{"rbind", "ro"}})
	var out fixture.SyncBuffer
	target, err := rt.Create(ctx, runtimetest.NewID("mover"), &runtime.Config{Spec: spec, IO: runtime.IO{Stdout: &out, Stderr: &out}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	before, err := target.NamespacePath(ctx, specs.NetworkNamespace)
	require.NoError(t, err)
	require.NoError(t, target.Start(ctx))
	fixture.Eventually(t, func() bool { return strings.Contains(out.String(), "unshare-net: ok") }, 30*time.Second, 20*time.Millisecond, out.String)
	_, err = os.Readlink(before)
	require.NoError(t, err, "the init lives")

	_, err = target.NamespacePath(ctx, specs.NetworkNamespace)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), "created with")
	s := runtime.DefaultSpec(rootfs, "/bin/true")
	s.Hostname = ""
	id := runtimetest.NewID("follower")
	_, err = rt.Create(ctx, id, &runtime.Config{Spec: s, Join: map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: target.ID()}})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), target.ID())
	_, err = os.Stat(filepath.Join(root, "containers", id))
	require.True(t, os.IsNotExist(err), "the refused create left its state")
	require.Equal(t, "", runOut(ctx, t, rt, &runtime.Config{Spec: s, Join: map[specs.LinuxNamespaceType]string{specs.IPCNamespace: target.ID()}}))
}

// podChild (BERTH_TEST_CHILD=pod): an attached owner creates a pod, an
// infra container in a user namespace of its own (never started) and a
// member joining all its namespaces (running), prints "started" and waits
// to be killed.
func podChild() int {
	root, rootfs, id := os.Getenv("BERTH_TEST_ROOT"), os.Getenv("BERTH_TEST_ROOTFS"), os.Getenv("BERTH_TEST_ID")
	engine, err := libcontainer.Open(root, libcontainer.Attached())
	if err != nil {
		fmt.Println(err)
		return 1
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	_, err = rt.Create(ctx, id+"-infra", &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/true"), UserNamespace: true})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	spec := runtime.DefaultSpec(rootfs, "/bin/sleep", "1000")
	spec.Hostname = ""
	join := map[specs.LinuxNamespaceType]string{}
	for _, typ := range []specs.LinuxNamespaceType{specs.UserNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.PIDNamespace} {
		join[typ] = id + "-infra"
	}
	c, err := rt.Create(ctx, id+"-member", &runtime.Config{Spec: spec, Join: join})
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("started")
	for {
		time.Sleep(time.Hour)
	}
}

// poolBlocks returns the first host IDs of the blocks the host's ID pool
// holds for id.
func poolBlocks(t *testing.T, id string) []uint32 {
	var rec struct {
		Blocks []struct {
			ID     string `json:"id"`
			HostID uint32 `json:"host_id"`
		} `json:"blocks"`
	}
	b, err := os.ReadFile(filepath.Join(runtime.HostIDPoolDir, "blocks.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rec))
	var out []uint32
	for _, bl := range rec.Blocks {
		if bl.ID == id {
			out = append(out, bl.HostID)
		}
	}
	return out
}

// The owner of a pod killed with SIGKILL, the next program on the same
// state finds the pod as it was: the member runs in the infra's user
// namespace, the infra is not deleted before it, and the ID block is held
// until both are gone.
func TestPodSurvivesKilledOwner(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs, id := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t), runtimetest.NewID("pod")
	child := startChild(t, "pod", root, rootfs, id)
	require.NoError(t, child.Process.Kill())
	_ = child.Wait()

	rt := openOn(t, root, runtime.SecurityPolicy{})
	infra, err := rt.Get(ctx, id+"-infra")
	require.NoError(t, err)
	member, err := rt.Get(ctx, id+"-member")
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = member.Delete(context.Background(), runtime.DeleteOptions{Force: true})
		_ = infra.Delete(context.Background(), runtime.DeleteOptions{Force: true})
	})
	st, err := member.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)
	ii, err := infra.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusCreated, ii.Status)
	mi, err := member.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, ii.Spec.Linux.UIDMappings, mi.Spec.Linux.UIDMappings)
	userns, err := infra.NamespacePath(ctx, specs.UserNamespace)
	require.NoError(t, err)
	want, err := os.Readlink(userns)
	require.NoError(t, err)
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", mi.Pid))
	require.NoError(t, err)
	require.Equal(t, want, got, "the member runs in the infra's user namespace")
	block := ii.Spec.Linux.UIDMappings[0].HostID
	require.Equal(t, []uint32{block}, poolBlocks(t, member.ID()))

	err = infra.Delete(ctx, runtime.DeleteOptions{Force: true})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), member.ID())
	require.NoError(t, member.Delete(ctx, runtime.DeleteOptions{Force: true}))
	require.Empty(t, poolBlocks(t, member.ID()))
	require.Equal(t, []uint32{block}, poolBlocks(t, infra.ID()), "held while the infra is")
	require.NoError(t, infra.Delete(ctx, runtime.DeleteOptions{}))
	require.Empty(t, poolBlocks(t, infra.ID()))
	list, err := rt.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}
