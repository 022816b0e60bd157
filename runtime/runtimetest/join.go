package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// podNamespaces are the namespaces a pod's containers share with its
// infra container.
var podNamespaces = []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.PIDNamespace}

// pod is an infra container, created and never started, as a CRI server
// makes one: its init holds the pod's namespaces. userns gives it a user
// namespace of its own where the runtime hands out ID blocks.
type pod struct {
	infra    *runtime.Container
	hostname string
	userns   bool
	// links are the host's readlink of each of its namespaces
	// (NamespacePath), "net:[4026532...]".
	links map[specs.LinuxNamespaceType]string
	// mapping is its uid_map line (userns only).
	mapping specs.LinuxIDMapping
}

func newPod(t *testing.T, h Harness, rt *runtime.Runtime) *pod {
	ctx := testContext(t)
	caps := rt.Capabilities()
	p := &pod{hostname: "pod-" + randHex(4), userns: caps.UserNamespace && !caps.UserNamespaceShared, links: map[specs.LinuxNamespaceType]string{}}
	cfg := h.Config(t, "/bin/true")
	cfg.Spec.Hostname = p.hostname
	cfg.UserNamespace = p.userns
	p.infra = create(t, rt, NewID("infra"), cfg)
	info, err := p.infra.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusCreated, info.Status)
	if p.userns {
		p.mapping = info.Spec.Linux.UIDMappings[0]
	}
	if !caps.NamespaceFiles {
		return p
	}
	require.Positive(t, info.Pid, "a created container's init has a pid")
	types := slices.Clone(podNamespaces)
	if p.userns {
		types = append(types, specs.UserNamespace)
	}
	for _, typ := range types {
		path, err := p.infra.NamespacePath(ctx, typ)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(path, fmt.Sprintf("/proc/%d/ns/", info.Pid)), "%s: %s", typ, path)
		link, err := os.Readlink(path)
		require.NoError(t, err)
		f, err := p.infra.OpenNamespace(ctx, typ)
		require.NoError(t, err)
		held, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		f.Close()
		require.NoError(t, err)
		require.Equal(t, link, held, "OpenNamespace holds what NamespacePath names")
		p.links[typ] = link
	}
	return p
}

// join returns the Join of every pod namespace (and the user namespace
// when the pod has one of its own).
func (p *pod) join() map[specs.LinuxNamespaceType]string {
	j := map[specs.LinuxNamespaceType]string{}
	for _, typ := range podNamespaces {
		j[typ] = p.infra.ID()
	}
	if p.userns {
		j[specs.UserNamespace] = p.infra.ID()
	}
	return j
}

// member creates and starts a container of the pod running script.
func (p *pod) member(t *testing.T, h Harness, rt *runtime.Runtime, prefix, script string) *runtime.Container {
	cfg := h.Config(t, "/bin/sh", "-c", script)
	cfg.Spec.Hostname = ""
	cfg.Join = p.join()
	withTenant(t, cfg)
	c := create(t, rt, NewID(prefix), cfg)
	require.NoError(t, c.Start(testContext(t)))
	return c
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// retrySh runs script in c until it exits 0, for at most 10 seconds, and
// returns its last output and exit code.
func retrySh(ctx context.Context, t *testing.T, c *runtime.Container, script string) (string, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, code := execSh(ctx, t, c, script)
		if code == 0 || time.Now().After(deadline) {
			return out, code
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// heldBlocks returns the ID blocks (their first host IDs) the host's ID
// pool records for the container id, of whatever state directory: the
// suite's IDs are unique to the run.
func heldBlocks(t *testing.T, id string) []uint32 {
	t.Helper()
	var rec struct {
		Blocks []struct {
			ID     string `json:"id"`
			HostID uint32 `json:"host_id"`
		} `json:"blocks"`
	}
	b, err := os.ReadFile(filepath.Join(runtime.HostIDPoolDir, "blocks.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
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

// The containers of a pod share its infra container's network, IPC, UTS,
// PID and user namespaces (Config.Join), the infra created and never
// started: one listens on loopback and the other connects, one's SysV
// segment and POSIX queue are the other's, the hostname is the pod's, ps
// shows the other's processes, both run with the pod's host IDs. A
// container of its own shares none of it. The infra cannot be deleted
// before them (nor by another runtime on the same state), and its ID
// block stays held until the last holder goes.
func testJoin(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.JoinNamespaces {
		cfg := h.Config(t, "/bin/true")
		cfg.Spec.Hostname = ""
		cfg.Join = map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: NewID("other")}
		_, err := rt.Create(ctx, NewID("nojoin"), cfg)
		require.Truef(t, isNotImplemented(err), "join on a backend without it: %v", err)
	}
	if !caps.NamespaceFiles {
		c := create(t, rt, NewID("nonsfiles"), h.Config(t, "/bin/true"))
		_, err := c.NamespacePath(ctx, specs.NetworkNamespace)
		require.Truef(t, isNotImplemented(err), "namespace path on a backend without it: %v", err)
	}
	if !caps.JoinNamespaces || !caps.Exec {
		t.Skip("backend cannot join namespaces or exec")
	}
	p := newPod(t, h, rt)
	a := p.member(t, h, rt, "a", "while :; do echo hello-from-a | nc -l -p 7777; done & exec sleep 1001")
	b := p.member(t, h, rt, "b", "exec sleep 1002")
	own := create(t, rt, NewID("own"), h.Config(t, "/bin/sh", "-c", "exec sleep 1003"))
	require.NoError(t, own.Start(ctx))

	for _, typ := range podNamespaces {
		if want := p.links[typ]; want != "" {
			for _, c := range []*runtime.Container{a, b} {
				got := strings.TrimSpace(shOut(ctx, t, c, "readlink /proc/self/ns/"+nsName(typ)))
				require.Equal(t, want, got, "%s of %s", typ, c.ID())
			}
			require.NotEqual(t, want, strings.TrimSpace(shOut(ctx, t, own, "readlink /proc/self/ns/"+nsName(typ))))
		}
	}
	joinNetwork(ctx, t, a, b, own)
	joinIPC(ctx, t, a, b, own, p.userns)
	for _, c := range []*runtime.Container{a, b} {
		require.Equal(t, p.hostname, strings.TrimSpace(shOut(ctx, t, c, "hostname")))
	}
	require.NotEqual(t, p.hostname, strings.TrimSpace(shOut(ctx, t, own, "hostname")))
	psB, psOwn := shOut(ctx, t, b, "ps -o args"), shOut(ctx, t, own, "ps -o args")
	require.Contains(t, psB, "sleep 1001", "b sees a's processes")
	require.NotContains(t, psOwn, "sleep 1001")
	if p.userns {
		joinUser(ctx, t, p, a, b)
	}

	// Not deleted while they exist, even with force, by this runtime or
	// another one on the same state; they run on.
	for _, r := range []*runtime.Runtime{rt, h.Reopen(t, rt)} {
		infra, err := r.Get(ctx, p.infra.ID())
		require.NoError(t, err)
		for _, force := range []bool{false, true} {
			err := infra.Delete(ctx, runtime.DeleteOptions{Force: force})
			require.Truef(t, isFailedPrecondition(err), "delete of a joined infra: %v", err)
			require.Contains(t, err.Error(), a.ID())
			require.Contains(t, err.Error(), b.ID())
		}
	}
	st, err := a.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)
	st, err = p.infra.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusCreated, st)

	for i, c := range []*runtime.Container{a, b} {
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
		requireGone(t, h, rt, c.ID(), nil)
		if p.userns {
			require.Empty(t, heldBlocks(t, c.ID()))
			require.Equal(t, []uint32{p.mapping.HostID}, heldBlocks(t, p.infra.ID()), "the block is held while the infra is")
		}
		if i == 0 {
			err := p.infra.Delete(ctx, runtime.DeleteOptions{})
			require.Truef(t, isFailedPrecondition(err), "%v", err)
			require.NotContains(t, err.Error(), a.ID())
		}
	}
	require.NoError(t, p.infra.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt, p.infra.ID(), nil)
	require.Empty(t, heldBlocks(t, p.infra.ID()))
}

// nsName is a namespace's name under /proc/<pid>/ns.
func nsName(typ specs.LinuxNamespaceType) string {
	switch typ {
	case specs.NetworkNamespace:
		return "net"
	case specs.MountNamespace:
		return "mnt"
	}
	return string(typ)
}

// joinNetwork: a serves a line on 7777 (any address, but its namespace
// has only loopback); own, in a namespace of its own, finds nothing
// there; b reads a's line on 127.0.0.1.
func joinNetwork(ctx context.Context, t *testing.T, a, b, own *runtime.Container) {
	t.Helper()
	require.Equal(t, "lo", strings.TrimSpace(shOut(ctx, t, a, "ls /sys/class/net")), "the pod's network is loopback only")
	read := "nc -w 2 127.0.0.1 7777 </dev/null | grep -x hello-from-a"
	_, code := execSh(ctx, t, own, read)
	require.NotZero(t, code, "a container of its own reaches nothing on its loopback")
	out, code := retrySh(ctx, t, b, read)
	require.Zero(t, code, "b reads a's line on loopback: %s", out)
}

// joinIPC: a's System V segment and POSIX message queue are b's to see,
// created by b's root as well when they share a user namespace; own sees
// neither.
func joinIPC(ctx context.Context, t *testing.T, a, b, own *runtime.Container, userns bool) {
	t.Helper()
	var kb [2]byte
	_, _ = rand.Read(kb[:])
	key := 40000 + int(kb[0])<<8 | int(kb[1])
	require.Equal(t, "shmget: ok\n", shOut(ctx, t, a, fmt.Sprintf("%s/tenant shmget %d", tenantDir, key)))
	require.Zero(t, func() int { _, c := execSh(ctx, t, a, "touch /dev/mqueue/berth-pod-q"); return c }())
	line := func(c *runtime.Container) string {
		out := shOut(ctx, t, c, fmt.Sprintf("awk '$1 == %d' /proc/sysvipc/shm", key))
		return strings.TrimSpace(out)
	}
	seg := strings.Fields(line(b))
	require.NotEmpty(t, seg, "b sees a's segment")
	if userns {
		// key shmid perms size cpid lpid nattch uid gid cuid ...: b's
		// namespace maps the creator to its root, as a's does.
		require.Equal(t, "0", seg[9], "the segment's creator is b's root too")
	}
	require.Empty(t, line(own), "a container of its own does not see the segment")
	require.Contains(t, shOut(ctx, t, b, "ls /dev/mqueue"), "berth-pod-q")
	require.NotContains(t, shOut(ctx, t, own, "ls /dev/mqueue"), "berth-pod-q")
}

// joinUser: a and b run with the pod's mapping and host IDs.
func joinUser(ctx context.Context, t *testing.T, p *pod, a, b *runtime.Container) {
	t.Helper()
	want := fmt.Sprintf("0 %d %d", p.mapping.HostID, p.mapping.Size)
	for _, c := range []*runtime.Container{a, b} {
		require.Equal(t, want, strings.Join(strings.Fields(shOut(ctx, t, c, "cat /proc/self/uid_map")), " "))
		info, err := c.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, []specs.LinuxIDMapping{p.mapping}, info.Spec.Linux.UIDMappings)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
		require.NoError(t, err)
		require.Regexp(t, fmt.Sprintf(`(?m)^Uid:\s+%d\s`, p.mapping.HostID), string(status), "%s runs as the pod's root on the host", c.ID())
		require.Equal(t, []uint32{p.mapping.HostID}, heldBlocks(t, c.ID()), "%s holds the pod's block", c.ID())
	}
}

// What cannot be joined is refused with its class and leaves nothing: no
// container, no state, cgroup or mount, no ID block, no hold on the
// target (which is then deleted at once).
func testJoinRefused(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.JoinNamespaces {
		t.Skip("backend cannot join namespaces")
	}
	userns := caps.UserNamespace && !caps.UserNamespaceShared
	created := create(t, rt, NewID("target"), h.Config(t, "/bin/true"))
	stopped := create(t, rt, NewID("stopped"), h.Config(t, "/bin/true"))
	require.NoError(t, stopped.Start(ctx))
	_, err := stopped.Wait(ctx)
	require.NoError(t, err)
	deleted := create(t, rt, NewID("deleted"), h.Config(t, "/bin/true"))
	require.NoError(t, deleted.Delete(ctx, runtime.DeleteOptions{}))
	var withUserns *runtime.Container
	if userns {
		cfg := h.Config(t, "/bin/true")
		cfg.UserNamespace = true
		withUserns = create(t, rt, NewID("usertarget"), cfg)
	}
	type join = map[specs.LinuxNamespaceType]string
	cases := []struct {
		name  string
		join  join
		class func(error) bool
		names string
	}{
		{"unknown", join{specs.NetworkNamespace: NewID("nobody")}, isNotFound, "nobody-"},
		{"deleted", join{specs.NetworkNamespace: deleted.ID()}, isNotFound, deleted.ID()},
		{"stopped", join{specs.PIDNamespace: stopped.ID()}, isFailedPrecondition, stopped.ID()},
		{"user of one without", join{specs.UserNamespace: created.ID()}, isFailedPrecondition, created.ID()},
		{"mount", join{specs.MountNamespace: created.ID()}, isInvalidArgument, "mount"},
		{"a good one and a stopped one", join{specs.NetworkNamespace: created.ID(), specs.IPCNamespace: stopped.ID()}, isFailedPrecondition, stopped.ID()},
	}
	if userns {
		cases = append(cases, struct {
			name  string
			join  join
			class func(error) bool
			names string
		}{"a user namespace and a stopped one", join{specs.UserNamespace: withUserns.ID(), specs.UTSNamespace: stopped.ID()}, isFailedPrecondition, stopped.ID()})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := h.Config(t, "/bin/true")
			cfg.Spec.Hostname = ""
			cfg.Join = tc.join
			id := NewID("joiner")
			_, err := rt.Create(ctx, id, cfg)
			require.Truef(t, tc.class(err), "%v", err)
			require.Contains(t, err.Error(), id)
			require.Contains(t, err.Error(), tc.names)
			requireNotCreated(t, h, rt, id)
			require.Empty(t, heldBlocks(t, id), "no ID block left for %s", id)
		})
	}
	// Nothing holds the targets.
	require.NoError(t, created.Delete(ctx, runtime.DeleteOptions{}))
	if withUserns != nil {
		require.NoError(t, withUserns.Delete(ctx, runtime.DeleteOptions{}))
		require.Empty(t, heldBlocks(t, withUserns.ID()))
	}
}

// A raw block volume reaches a container that joined another's user
// namespace, as one in a user namespace of its own; one that joined only
// the network is refused it, as any container without a user namespace.
func testJoinRawBlock(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.JoinNamespaces || !caps.RawBlock || !caps.UserNamespace || caps.UserNamespaceShared {
		t.Skip("backend cannot join user namespaces with raw block devices")
	}
	p := newPod(t, h, rt)
	img := zeroImage(t, 8<<20)
	raw := []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}}

	cfg := h.Config(t, "/bin/true")
	cfg.Join = map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: p.infra.ID()}
	cfg.Volumes = raw
	id := NewID("rawnet")
	_, err := rt.Create(ctx, id, cfg)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "raw block without a user namespace: %v", err)
	requireNotCreated(t, h, rt, id)
	requireDetached(t, img)

	out := newBuffer()
	cfg = h.Config(t, "/bin/sh", "-c", "echo berth-pod-raw | dd of=/dev/xvdb conv=fsync 2>/dev/null && echo write-ok; cat /proc/self/uid_map")
	cfg.Spec.Hostname = ""
	cfg.Join = p.join()
	cfg.Volumes = raw
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("rawpod"), cfg)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Contains(t, out.String(), "write-ok")
	require.Contains(t, out.String(), fmt.Sprintf("%d", p.mapping.HostID))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
	b, err := os.ReadFile(img)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "berth-pod-raw\n"))
}
