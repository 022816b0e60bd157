package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
)

func TestMain(m *testing.M) {
	libcontainer.Init()
	os.Exit(m.Run())
}

// testSubnet is the pod network of these tests: a bridge and a range of
// their own, so they never meet the setup's default network.
const testSubnet = "10.97.0.0/24"

// server is a berth-cri run on a root of its own, in this process or as a
// process of its own.
type server struct {
	root, sock, cniConf string
	rt                  cri.RuntimeServiceClient
	im                  cri.ImageServiceClient
	stop                func()
}

// writeTestNetwork writes the tests' CNI configuration into dir.
func writeTestNetwork(t *testing.T, dir, dataDir string) {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"berth-test","plugins":[
 {"type":"bridge","bridge":"berth-test0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"firewall"}]}`, testSubnet, dataDir)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "10-test.conflist"), []byte(conf), 0o644))
}

// startServer runs berth-cri in this process on root until the returned
// server is stopped (or the test ends).
func startServer(t *testing.T, root string, extra ...string) *server {
	t.Helper()
	s := newServer(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, append(s.args(), extra...)) }()
	s.connect(t, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("berth-cri did not stop")
		}
	})
	return s
}

// daemonBinary builds berth-cri once for the tests that run it as a
// process of its own, without the race detector: the engine re-executes
// the daemon's binary as each container's init, and a test binary's init
// is too large for some containers' memory limits.
var daemonBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "berth-cri-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "berth-cri")
	out, err := exec.Command("go", "build", "-tags", "seccomp", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
})

// startDaemon runs berth-cri as a process of its own on root, its
// registry traffic held to loopback (a dead proxy for every other host),
// until the returned server is stopped or the test ends. Its log is
// reported if the test fails.
func startDaemon(t *testing.T, root string, extra ...string) *server {
	t.Helper()
	bin, err := daemonBinary()
	require.NoError(t, err)
	s := newServer(t, root)
	var log fixture.SyncBuffer // written by the command's copier
	cmd := exec.Command(bin, append(s.args(), extra...)...)
	cmd.Env = append(os.Environ(), "HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=127.0.0.1,localhost")
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.connect(t, func() error {
		if t.Failed() {
			t.Logf("berth-cri's log:\n%s", log.String())
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("berth-cri did not stop")
		}
	})
	return s
}

func newServer(t *testing.T, root string) *server {
	s := &server{root: root, sock: filepath.Join(root, "cri.sock"), cniConf: filepath.Join(root, "net.d")}
	writeTestNetwork(t, s.cniConf, filepath.Join(root, "ipam"))
	return s
}

// args are the flags every test server runs with.
func (s *server) args() []string {
	return []string{"--root", s.root, "--listen", "unix://" + s.sock, "--cni-conf-dir", s.cniConf}
}

// connect dials the server, waits for its answer, and makes s.stop (run
// when the test ends) remove what a failed test left, then stop it.
func (s *server) connect(t *testing.T, stop func() error) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(a, "unix://"))
		}))
	require.NoError(t, err)
	s.rt, s.im = cri.NewRuntimeServiceClient(conn), cri.NewImageServiceClient(conn)
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		if t.Failed() {
			// What a failed test left: every pod goes, so that nothing
			// outlives the test (the passing ones check that it does
			// not need this).
			if pods, err := s.rt.ListPodSandbox(context.Background(), &cri.ListPodSandboxRequest{}); err == nil {
				for _, p := range pods.Items {
					s.rt.RemovePodSandbox(context.Background(), &cri.RemovePodSandboxRequest{PodSandboxId: p.Id})
				}
			}
		}
		conn.Close()
		require.NoError(t, stop())
	}
	t.Cleanup(s.stop)
	require.Eventually(t, func() bool {
		_, err := s.rt.Version(context.Background(), &cri.VersionRequest{})
		return err == nil
	}, time.Minute, 50*time.Millisecond, "berth-cri does not answer")
}

// busyboxImage imports a busybox image into the store under root as
// busybox:test and returns its ID.
func busyboxImage(t *testing.T, root string) string {
	t.Helper()
	layer, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{layer}, "/bin/sh")
	im.Tags = []string{"busybox:test"}
	store, err := image.Open(filepath.Join(root, "images"))
	require.NoError(t, err)
	res, err := store.ImportReader(context.Background(), bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	return res.Images[0].Config.String()
}

func podConfig(name string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "test", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: "",
		DnsConfig:    &cri.DNSConfig{Servers: []string{"10.97.0.53"}, Searches: []string{"test.svc"}},
		Labels:       map[string]string{"app": name},
		Linux:        &cri.LinuxPodSandboxConfig{},
	}
}

func containerConfig(name string, cmd ...string) *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: "busybox:test"},
		Command:  cmd,
		LogPath:  name + ".log",
		Linux:    &cri.LinuxContainerConfig{},
	}
}

func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.Code(err), "%v", err)
}

// leftovers lists what a pod can leave on the host: mounts under root,
// links of the test bridge, IP leases, berth cgroups of the IDs.
func leftovers(t *testing.T, root string, ids ...string) []string {
	t.Helper()
	var out []string
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], root+"/") && !strings.HasPrefix(f[4], root+"/images") {
			out = append(out, "mount "+f[4])
		}
	}
	links, err := exec.Command("ip", "-o", "link", "show", "master", "berth-test0").CombinedOutput()
	if err == nil && len(bytes.TrimSpace(links)) > 0 {
		out = append(out, "links on berth-test0: "+string(links))
	}
	leases, _ := filepath.Glob(filepath.Join(root, "ipam", "berth-test", "10.*"))
	for _, l := range leases {
		out = append(out, "lease "+l)
	}
	for _, id := range ids {
		cg, _ := filepath.Glob("/sys/fs/cgroup/*/berth/" + id)
		cg2, _ := filepath.Glob("/sys/fs/cgroup/*/*/berth/" + id)
		for _, c := range append(cg, cg2...) {
			out = append(out, "cgroup "+c)
		}
	}
	return out
}

// A pod's whole life through the CRI: sandbox with its network, a
// container with logs, exec, stats; stop and removal leave nothing.
func TestPodLifecycle(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	imageID := busyboxImage(t, root)
	s := startServer(t, root)

	v, err := s.rt.Version(ctx, &cri.VersionRequest{})
	require.NoError(t, err)
	require.Equal(t, "berth", v.RuntimeName)
	require.Equal(t, "v1", v.RuntimeApiVersion)
	st, err := s.rt.Status(ctx, &cri.StatusRequest{})
	require.NoError(t, err)
	for _, c := range st.Status.Conditions {
		require.True(t, c.Status, "%s: %s %s", c.Type, c.Reason, c.Message)
	}

	logDir := filepath.Join(root, "logs")
	require.NoError(t, os.MkdirAll(logDir, 0o755))
	pcfg := podConfig("life")
	pcfg.LogDirectory = logDir
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	_, err = s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	requireCode(t, codes.AlreadyExists, err)

	ps, err := s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Equal(t, cri.PodSandboxState_SANDBOX_READY, ps.Status.State)
	ip := ps.Status.GetNetwork().GetIp()
	require.True(t, strings.HasPrefix(ip, "10.97.0."), "pod IP %q", ip)

	cc := containerConfig("main", "sh", "-c", "echo out; echo err >&2; hostname; sleep 1000")
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: pcfg})
	require.NoError(t, err)
	cid := cr.ContainerId
	_, err = s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: pcfg})
	requireCode(t, codes.AlreadyExists, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cid})
	require.NoError(t, err)

	cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: cid})
	require.NoError(t, err)
	require.Equal(t, cri.ContainerState_CONTAINER_RUNNING, cs.Status.State)
	require.Equal(t, imageID, cs.Status.ImageRef)
	require.NotZero(t, cs.Status.StartedAt)

	// The container is in the pod's network, with the pod's hostname and
	// DNS configuration.
	ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "ip -o -4 addr show eth0; hostname; cat /etc/resolv.conf"}, Timeout: 10})
	require.NoError(t, err)
	require.Zero(t, ex.ExitCode, "%s", ex.Stderr)
	require.Contains(t, string(ex.Stdout), ip+"/")
	require.Contains(t, string(ex.Stdout), "life\n")
	require.Contains(t, string(ex.Stdout), "nameserver 10.97.0.53")
	ex, err = s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "exit 7"}})
	require.NoError(t, err)
	require.EqualValues(t, 7, ex.ExitCode)
	_, err = s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sleep", "100"}, Timeout: 1})
	requireCode(t, codes.DeadlineExceeded, err)

	// The log, in the CRI format.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(logDir, "main.log"))
		return strings.Contains(string(b), " stdout F out\n") && strings.Contains(string(b), " stderr F err\n") && strings.Contains(string(b), " stdout F life\n")
	}, 10*time.Second, 100*time.Millisecond)

	stats, err := s.rt.ContainerStats(ctx, &cri.ContainerStatsRequest{ContainerId: cid})
	require.NoError(t, err)
	require.NotZero(t, stats.Stats.GetMemory().GetWorkingSetBytes().GetValue())
	list, err := s.rt.ListContainers(ctx, &cri.ListContainersRequest{Filter: &cri.ContainerFilter{PodSandboxId: pod}})
	require.NoError(t, err)
	require.Len(t, list.Containers, 1)

	_, err = s.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: cid, Timeout: 1})
	require.NoError(t, err)
	cs, err = s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: cid})
	require.NoError(t, err)
	require.Equal(t, cri.ContainerState_CONTAINER_EXITED, cs.Status.State)
	require.NotZero(t, cs.Status.ExitCode)
	require.NotZero(t, cs.Status.FinishedAt)

	// A container created and not started when its pod stops cannot be
	// started after.
	late, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("late", "sleep", "1000"), SandboxConfig: pcfg})
	require.NoError(t, err)
	_, err = s.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: late.ContainerId})
	requireCode(t, codes.FailedPrecondition, err)
	ps, err = s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Equal(t, cri.PodSandboxState_SANDBOX_NOTREADY, ps.Status.State)
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	_, err = s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	requireCode(t, codes.NotFound, err)
	_, err = s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: cid})
	requireCode(t, codes.NotFound, err)
	require.Empty(t, leftovers(t, root, pod, cid, late.ContainerId))

	// Unknown IDs: stop and remove are idempotent, the rest not found.
	for _, err := range []error{
		func() error {
			_, err := s.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod})
			return err
		}(),
		func() error {
			_, err := s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
			return err
		}(),
		func() error {
			_, err := s.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: cid})
			return err
		}(),
		func() error {
			_, err := s.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: cid})
			return err
		}(),
	} {
		require.NoError(t, err)
	}
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cid})
	requireCode(t, codes.NotFound, err)
}

// Refused creates change nothing: the name stays free, no container is
// left in the runtime.
func TestRefusedCreateLeavesNothing(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pcfg := podConfig("refuse")
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	t.Cleanup(func() { s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod}) })

	bad := []struct {
		name string
		cfg  *cri.ContainerConfig
		code codes.Code
	}{
		{"unknown image", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Image.Image = "nosuch:image"
			return c
		}(), codes.NotFound},
		{"relative mount", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "data", HostPath: "/tmp"}}
			return c
		}(), codes.InvalidArgument},
		{"missing host path", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "/data", HostPath: "/nonexistent/berth"}}
			return c
		}(), codes.NotFound},
		{"a kernel interface filesystem", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "/host-proc", HostPath: "/proc"}}
			return c
		}(), codes.InvalidArgument},
		{"a host path that is a FIFO", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			fifo := filepath.Join(root, "fifo")
			require.NoError(t, syscall.Mkfifo(fifo, 0o600))
			c.Mounts = []*cri.Mount{{ContainerPath: "/fifo", HostPath: fifo}}
			return c
		}(), codes.InvalidArgument},
		{"bidirectional propagation without the privileged policy", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "/data", HostPath: "/tmp", Propagation: cri.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
			return c
		}(), codes.PermissionDenied},
		{"recursive read-only, not read-only", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "/data", HostPath: "/tmp", RecursiveReadOnly: true}}
			return c
		}(), codes.InvalidArgument},
		{"recursive read-only, propagating", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Mounts = []*cri.Mount{{ContainerPath: "/data", HostPath: "/tmp", Readonly: true, RecursiveReadOnly: true,
				Propagation: cri.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}
			return c
		}(), codes.InvalidArgument},
		{"privileged", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Linux.SecurityContext = &cri.LinuxContainerSecurityContext{Privileged: true}
			return c
		}(), codes.PermissionDenied},
		{"group without user", func() *cri.ContainerConfig {
			c := containerConfig("c", "true")
			c.Linux.SecurityContext = &cri.LinuxContainerSecurityContext{RunAsGroup: &cri.Int64Value{Value: 5}}
			return c
		}(), codes.InvalidArgument},
	}
	for _, tc := range bad {
		_, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: tc.cfg, SandboxConfig: pcfg})
		requireCode(t, tc.code, err)
	}
	list, err := s.rt.ListContainers(ctx, &cri.ListContainersRequest{})
	require.NoError(t, err)
	require.Empty(t, list.Containers)
	entries, err := os.ReadDir(filepath.Join(root, "handlers", "libcontainer", "containers"))
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the infra container") // nothing else in the runtime
	// The name is free.
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("c", "true"), SandboxConfig: pcfg})
	require.NoError(t, err)
	require.NotEmpty(t, cr.ContainerId)
	_, err = s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: "nosuchpod", Config: containerConfig("d", "true"), SandboxConfig: pcfg})
	requireCode(t, codes.NotFound, err)
}

// berth-cri's restart: pods and containers made before are listed and
// controlled after, and the containers ran on meanwhile.
func TestRestartKeepsPods(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pcfg := podConfig("restart")
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("c", "sleep", "1000"), SandboxConfig: pcfg})
	require.NoError(t, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	ps, err := s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	s.stop()

	s = startServer(t, root)
	pods, err := s.rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	require.Equal(t, cri.PodSandboxState_SANDBOX_READY, pods.Items[0].State)
	ps2, err := s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Equal(t, ps.Status.GetNetwork().GetIp(), ps2.Status.GetNetwork().GetIp())
	cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	require.Equal(t, cri.ContainerState_CONTAINER_RUNNING, cs.Status.State)
	ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cr.ContainerId, Cmd: []string{"echo", "still"}, Timeout: 10})
	require.NoError(t, err)
	require.Equal(t, "still\n", string(ex.Stdout))
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, cr.ContainerId))
}

// GetContainerEvents streams a container's life, its exit on its own
// included, each event with its pod's status; a pod on an unknown handler
// is refused.
func TestContainerEvents(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	_, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podConfig("docker"), RuntimeHandler: "docker"})
	requireCode(t, codes.Unimplemented, err)

	stream, err := s.rt.GetContainerEvents(ctx, &cri.GetEventsRequest{})
	require.NoError(t, err)
	pcfg := podConfig("events")
	pcfg.LogDirectory = filepath.Join(root, "logs")
	require.NoError(t, os.MkdirAll(pcfg.LogDirectory, 0o755))
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("exits", "sh", "-c", "exit 3"), SandboxConfig: pcfg})
	require.NoError(t, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	var got []cri.ContainerEventType
	for len(got) < 3 {
		ev, err := stream.Recv()
		require.NoError(t, err)
		if ev.ContainerId != cr.ContainerId {
			continue
		}
		require.Equal(t, pod, ev.PodSandboxStatus.GetId())
		got = append(got, ev.ContainerEventType)
		if ev.ContainerEventType == cri.ContainerEventType_CONTAINER_STOPPED_EVENT {
			var exit int32 = -1
			for _, c := range ev.ContainersStatuses {
				if c.Id == cr.ContainerId {
					exit = c.ExitCode
				}
			}
			require.EqualValues(t, 3, exit)
		}
	}
	require.Equal(t, []cri.ContainerEventType{cri.ContainerEventType_CONTAINER_CREATED_EVENT, cri.ContainerEventType_CONTAINER_STARTED_EVENT, cri.ContainerEventType_CONTAINER_STOPPED_EVENT}, got)
	_, err = s.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	for {
		ev, err := stream.Recv()
		require.NoError(t, err)
		if ev.ContainerId == cr.ContainerId {
			require.Equal(t, cri.ContainerEventType_CONTAINER_DELETED_EVENT, ev.ContainerEventType)
			break
		}
	}
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
}

// A user-namespaced pod: its containers share one range of berth's ID
// pool (the kubelet's mapping is checked for its shape only), root in them
// is no host root, and a host path is ID-mapped: the container's root is
// its owner there.
func TestUserNamespacePod(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pcfg := podConfig("userns")
	pcfg.Linux.SecurityContext = &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{
		UsernsOptions: &cri.UserNamespace{Mode: cri.NamespaceMode_POD,
			Uids: []*cri.IDMapping{{HostId: 1000, ContainerId: 0, Length: 65536}},
			Gids: []*cri.IDMapping{{HostId: 1000, ContainerId: 0, Length: 65536}}},
	}}
	bad := podConfig("userns-bad")
	bad.Linux.SecurityContext = &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{
		UsernsOptions: &cri.UserNamespace{Mode: cri.NamespaceMode_POD, Uids: []*cri.IDMapping{{HostId: 1000, ContainerId: 1, Length: 10}}},
	}}
	_, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: bad})
	requireCode(t, codes.InvalidArgument, err)

	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	t.Cleanup(func() { s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod}) })
	vol := filepath.Join(fixture.TempDir(t), "vol")
	require.NoError(t, os.Mkdir(vol, 0o755))
	var maps []string
	for _, name := range []string{"a", "b"} {
		cc := containerConfig(name, "sleep", "1000")
		cc.Mounts = []*cri.Mount{{ContainerPath: "/vol", HostPath: vol}}
		cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: pcfg})
		require.NoError(t, err)
		_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
		require.NoError(t, err)
		ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cr.ContainerId, Cmd: []string{"sh", "-c", "cat /proc/self/uid_map; touch /vol/" + name}, Timeout: 10})
		require.NoError(t, err)
		require.Zero(t, ex.ExitCode, "%s %s", ex.Stdout, ex.Stderr)
		maps = append(maps, strings.Join(strings.Fields(string(ex.Stdout)), " "))
	}
	require.Equal(t, maps[0], maps[1], "the pod's containers share one mapping")
	f := strings.Fields(maps[0])
	require.Len(t, f, 3)
	require.Equal(t, "0", f[0])
	require.NotEqual(t, "0", f[1], "root in the pod is not the host's root")
	for _, name := range []string{"a", "b"} {
		fi, err := os.Stat(filepath.Join(vol, name))
		require.NoError(t, err)
		// The host path is ID-mapped: the pod's root is its owner (host
		// root) there, as Kubernetes' user-namespaced volumes are.
		require.Zero(t, fi.Sys().(*syscall.Stat_t).Uid, "a file the pod's root made on the host path")
	}
}

// The parallels handler (RuntimeClass "parallels"): a pod whose containers
// each run on a root disk of their own.
func TestParallelsHandler(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pcfg := podConfig("disk")
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg, RuntimeHandler: "parallels"})
	require.NoError(t, err)
	pod := run.PodSandboxId
	t.Cleanup(func() { s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod}) })
	ps, err := s.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Equal(t, "parallels", ps.Status.RuntimeHandler)
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("c", "sleep", "1000"), SandboxConfig: pcfg})
	require.NoError(t, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cr.ContainerId, Cmd: []string{"sh", "-c", "hostname; grep ' / ' /proc/self/mountinfo"}, Timeout: 10})
	require.NoError(t, err)
	require.Zero(t, ex.ExitCode, "%s", ex.Stderr)
	require.Contains(t, string(ex.Stdout), "disk\n")
	require.Contains(t, string(ex.Stdout), "/dev/loop", "the root filesystem is a disk image on a loop device")
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, cr.ContainerId))
}

// ExecSync (the kubelet's exec probes) returns once the command exited,
// even when a child it left behind holds its output; with a timeout, a
// command killed at it whose child holds the output fails promptly with
// DeadlineExceeded. As with containerd and Docker, the children are not
// killed: they are the container's processes.
func TestExecSyncChildHoldsOutput(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pod, pcfg := runPod(t, s, "execsync")
	cid := startContainer(t, s, pod, pcfg, containerConfig("c", "sleep", "1000"))

	for _, timeout := range []int64{0, 10} {
		ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "sleep 100000 & echo hi"}, Timeout: timeout})
		require.NoError(t, err)
		require.Zero(t, ex.ExitCode, "%s", ex.Stderr)
		require.Equal(t, "hi\n", string(ex.Stdout))
	}
	for _, script := range []string{"sleep 100000", "sleep 100001 & sleep 100000"} {
		_, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", script}, Timeout: 1})
		requireCode(t, codes.DeadlineExceeded, err)
	}
	ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: cid, Cmd: []string{"ps", "-o", "args"}, Timeout: 10})
	require.NoError(t, err)
	require.Contains(t, string(ex.Stdout), "sleep 100001", "the child left behind lives on")

	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, cid))
}
