package network

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

func testPod(netns string) Pod {
	id := "pod" + randHex(8)
	return Pod{ID: id, Name: "web-" + id[3:9], Namespace: "default", UID: "uid-" + id, NetNS: netns}
}

// serve answers every connection to port in the namespace at netns with
// reply, until the test ends.
func serve(t *testing.T, netns string, port int, reply string) {
	t.Helper()
	var l net.Listener
	require.NoError(t, inNetNS(netns, func() (err error) {
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}))
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(reply))
			c.Close()
		}
	}()
}

// fetch reads what the server at addr answers, dialing from the namespace
// at netns ("" for the host's).
func fetch(netns, addr string) (string, error) {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	}
	var err error
	if netns == "" {
		err = dial()
	} else {
		err = inNetNS(netns, dial)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// freePort is a TCP port nothing on the host listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Two pods on a network of the test's own: distinct addresses in the
// range, lo up and eth0 with the address in each, traffic between them,
// a host port reaching one from the host's loopback and from the bridge's
// address; then each torn down, one after its namespace is gone, leaving
// no veth, lease, iptables rule or cache entry.
func TestSetupTeardown(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{portmap, firewall}})
	m := n.manager(t)
	require.NoError(t, m.Status())
	ctx := context.Background()

	a, b := testPod(newNetNS(t)), testPod(newNetNS(t))
	hostPort := freePort(t)
	a.PortMappings = []PortMapping{{Protocol: "TCP", ContainerPort: 8080, HostPort: int32(hostPort)}, {ContainerPort: 9, HostPort: 0}}
	ra, err := m.Setup(ctx, a)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), a) })
	rb, err := m.Setup(ctx, b)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), b) })

	require.Len(t, ra.IPs, 1)
	require.Len(t, rb.IPs, 1)
	ipA, ipB := ra.IPs[0], rb.IPs[0]
	t.Logf("pod a %s, pod b %s on %s (%s), host port %d", ipA, ipB, n.bridge, n.subnet, hostPort)
	assert.True(t, n.subnet.Contains(ipA) && n.subnet.Contains(ipB), "%s and %s in %s", ipA, ipB, n.subnet)
	assert.False(t, ipA.Equal(ipB))
	assert.ElementsMatch(t, []string{ipA.String(), ipB.String()}, n.leases(t))
	assert.Len(t, n.ports(t), 2)

	for _, p := range []struct {
		pod Pod
		ip  net.IP
	}{{a, ipA}, {b, ipB}} {
		up, _ := link(t, p.pod.NetNS, "lo")
		assert.True(t, up, "lo up in %s", p.pod.NetNS)
		up, ips := link(t, p.pod.NetNS, IfName)
		assert.True(t, up, "eth0 up in %s", p.pod.NetNS)
		assert.Contains(t, fmt.Sprint(ips), p.ip.String())
		cached, err := m.Cached(p.pod)
		require.NoError(t, err)
		assert.Equal(t, []net.IP{p.ip}, cached.IPs)
	}

	serve(t, a.NetNS, 8080, "pod a")
	got, err := fetch(b.NetNS, net.JoinHostPort(ipA.String(), "8080"))
	require.NoError(t, err, "from pod b to pod a")
	assert.Equal(t, "pod a", got)
	got, err = fetch("", net.JoinHostPort(n.gateway.String(), strconv.Itoa(hostPort)))
	require.NoError(t, err, "host port through the bridge's address")
	assert.Equal(t, "pod a", got)
	got, err = fetch("", net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort)))
	require.NoError(t, err, "host port through loopback")
	assert.Equal(t, "pod a", got)

	assert.NotEmpty(t, iptablesLines(t, a.ID), "pod a's masquerading and host port rules")
	assert.NotEmpty(t, iptablesLines(t, b.ID))
	assert.NotEmpty(t, iptablesLines(t, ipA.String()+"/32"), "pod a's forwarding rules")

	// Pod a: torn down with its namespace in place, twice.
	require.NoError(t, m.Teardown(ctx, a))
	assert.Equal(t, []string{ipB.String()}, n.leases(t))
	assert.Len(t, n.ports(t), 1)
	assert.Empty(t, iptablesLines(t, a.ID))
	assert.Empty(t, iptablesLines(t, ipA.String()+"/32"))
	up, _ := link(t, a.NetNS, "lo")
	assert.False(t, up, "lo after the teardown")
	_, err = os.Stat(m.pin(a.ID))
	assert.True(t, os.IsNotExist(err), "the pin after the teardown: %v", err)
	_, err = m.Cached(a)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	require.NoError(t, m.Teardown(ctx, a))

	// Pod b: its path goes first; Setup's pin holds the namespace (and
	// the veth) until the teardown, which needs only the ID.
	deleteNetNS(t, b.NetNS)
	assert.Len(t, n.ports(t), 1)
	require.NoError(t, m.Teardown(ctx, Pod{ID: b.ID}))
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, b.ID))
	assert.Empty(t, iptablesLines(t, ipB.String()+"/32"))
	_, err = m.Cached(b)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	require.NoError(t, m.Teardown(ctx, b))
}

// A pod whose namespace Setup got as /proc/PID/ns/net: the process goes
// (its PID free for reuse), the pin keeps the namespace, and Teardown
// removes everything.
func TestSetupProcNetNS(t *testing.T) {
	requireCNI(t)
	_, err := exec.LookPath("unshare")
	fixture.Require(t, err == nil, "needs unshare (util-linux)")
	n := newTestNet(t, netConf{})
	m := n.manager(t)
	ctx := context.Background()

	cmd := exec.Command("unshare", "--net", "sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// unshare has moved once it is no longer in this namespace.
	p := testPod(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	require.Eventually(t, func() bool { return isNetNS(p.NetNS) }, 5*time.Second, 10*time.Millisecond)
	r, err := m.Setup(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), p) })
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()

	_, ips := link(t, m.pin(p.ID), IfName)
	assert.Contains(t, fmt.Sprint(ips), r.IPs[0].String(), "eth0 in the pinned namespace")
	assert.Len(t, n.ports(t), 1)
	require.NoError(t, m.Teardown(ctx, p))
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
}

// A pin that holds no namespace any more (as after a restart of the
// host): Teardown runs the plugins without one, which release the lease.
// (The bridge plugin cannot find a gone namespace's addresses to remove
// its masquerading rules, which a restart clears anyway: this network has
// none.)
func TestTeardownNamespaceGone(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{noMasq: true, extra: []map[string]any{portmap, firewall}})
	m := n.manager(t)
	ctx := context.Background()
	p := testPod(newNetNS(t))
	p.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	r, err := m.Setup(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), p) })
	assert.NotEmpty(t, iptablesLines(t, p.ID), "host port rules")
	assert.NotEmpty(t, iptablesLines(t, r.IPs[0].String()+"/32"), "forwarding rules")

	require.NoError(t, unix.Unmount(m.pin(p.ID), unix.MNT_DETACH))
	deleteNetNS(t, p.NetNS)
	require.Eventually(t, func() bool { return len(n.ports(t)) == 0 }, time.Minute, 10*time.Millisecond, "the veth goes with the namespace (the kernel frees a namespace in the background, later under load)")
	assert.Len(t, n.leases(t), 1)
	require.NoError(t, m.Teardown(ctx, p))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
	assert.Empty(t, iptablesLines(t, r.IPs[0].String()+"/32"))
	_, err = os.Stat(m.pin(p.ID))
	assert.True(t, os.IsNotExist(err), "the pin's file: %v", err)
	_, err = m.Cached(p)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

// A second Setup of a pod is refused, and the first's network stays.
func TestSetupTwice(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{})
	m := n.manager(t)
	ctx := context.Background()
	p := testPod(newNetNS(t))
	r, err := m.Setup(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), p) })

	p2 := p
	p2.NetNS = newNetNS(t)
	_, err = m.Setup(ctx, p2)
	require.True(t, errdefs.IsAlreadyExists(err), "%v", err)
	require.Contains(t, err.Error(), p.ID)
	_, ips := link(t, p.NetNS, IfName)
	assert.Contains(t, fmt.Sprint(ips), r.IPs[0].String())
	assert.Equal(t, []string{r.IPs[0].String()}, n.leases(t))
	assert.Len(t, n.ports(t), 1)
	require.NoError(t, m.Teardown(ctx, p))
	assert.Empty(t, n.leases(t))
}

// A range used up: the next pod's Setup is resource-exhausted, and the
// veth the bridge plugin made before it asked for an address goes.
func TestSetupRangeExhausted(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{prefix: 30}) // .1 the gateway, .2 the one pod address
	m := n.manager(t)
	ctx := context.Background()
	p1, p2 := testPod(newNetNS(t)), testPod(newNetNS(t))
	_, err := m.Setup(ctx, p1)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), p1) })
	_, err = m.Setup(ctx, p2)
	require.True(t, errdefs.IsResourceExhausted(err), "%v", err)
	require.Contains(t, err.Error(), p2.ID)
	assert.Len(t, n.ports(t), 1)
	assert.Len(t, n.leases(t), 1)
	assert.Empty(t, iptablesLines(t, p2.ID))
	_, err = m.Cached(p2)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	up, _ := link(t, p2.NetNS, "lo")
	assert.False(t, up, "lo of the pod that got no network")
}

// TestMain is also the fake plugins fakePlugin installs: run with
// CNI_COMMAND set, the test binary is one.
func TestMain(m *testing.M) {
	if cmd := os.Getenv("CNI_COMMAND"); cmd != "" {
		os.Exit(fakePluginMain(cmd))
	}
	os.Exit(m.Run())
}

// fakePluginMain is a plugin that passes the previous result on; named
// failCMD (failadd, faildel), it fails CMD while the file fail next to its
// directory exists.
func fakePluginMain(cmd string) int {
	stdin, _ := io.ReadAll(os.Stdin)
	if c, ok := strings.CutPrefix(filepath.Base(os.Args[0]), "fail"); ok && strings.EqualFold(c, cmd) {
		if _, err := os.Stat(filepath.Join(filepath.Dir(os.Args[0]), "..", "fail")); err == nil {
			fmt.Printf(`{"cniVersion":"1.0.0","code":999,"msg":"the test plugin fails %s"}`, cmd)
			return 1
		}
	}
	switch cmd {
	case "ADD":
		var conf struct {
			PrevResult json.RawMessage `json:"prevResult"`
		}
		json.Unmarshal(stdin, &conf)
		os.Stdout.Write(conf.PrevResult)
	case "VERSION":
		fmt.Print(`{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}`)
	}
	return 0
}

// fakePlugin installs the test binary as plugin name in the network's own
// bin directory (searched before the real one), failing (see
// fakePluginMain) until n.dir/fail goes.
func fakePlugin(t *testing.T, n *testNet, name string) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	bin := filepath.Join(n.dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	require.NoError(t, os.Symlink(self, filepath.Join(bin, name)))
	require.NoError(t, os.WriteFile(filepath.Join(n.dir, "fail"), nil, 0o644))
	n.opts.BinDirs = []string{bin, pluginDir}
}

// A plugin that fails its ADD after the bridge plugin did its part: Setup
// fails, and the bridge's veth, lease and rules are gone.
func TestSetupFailureUndone(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{{"type": "failadd"}}})
	fakePlugin(t, n, "failadd")
	m := n.manager(t)
	ctx := context.Background()
	p := testPod(newNetNS(t))
	_, err := m.Setup(ctx, p)
	require.Error(t, err)
	t.Log(err)
	assert.Contains(t, err.Error(), p.ID)
	assert.Contains(t, err.Error(), "the test plugin fails ADD")
	assert.True(t, errdefs.IsUnknown(err), "%v", err)
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
	_, err = m.Cached(p)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	up, _ := link(t, p.NetNS, "lo")
	assert.False(t, up, "lo after the undone Setup")
}

// A plugin whose DEL fails does not keep the others from theirs; the
// cache entry stays, and a later Teardown finishes.
func TestTeardownKeepsGoing(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{portmap, {"type": "faildel"}}})
	fakePlugin(t, n, "faildel")
	m := n.manager(t)
	ctx := context.Background()
	p := testPod(newNetNS(t))
	p.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	r, err := m.Setup(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(n.dir + "/fail"); m.Teardown(context.Background(), p) })

	err = m.Teardown(ctx, p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the test plugin fails DEL")
	assert.Contains(t, err.Error(), p.ID)
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
	cached, err := m.Cached(p)
	require.NoError(t, err, "the cache entry of a teardown that failed")
	assert.Equal(t, r.IPs, cached.IPs)

	require.NoError(t, os.Remove(n.dir+"/fail"))
	require.NoError(t, m.Teardown(ctx, p))
	_, err = m.Cached(p)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

// A plugin missing from the bin directories: Status and Setup say so
// (unavailable) and Setup touches nothing; a Teardown of a pod set up
// before the plugin went still runs the others.
func TestMissingPlugin(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{portmap, {"type": "gone"}}})
	m := n.manager(t)
	err := m.Status()
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	require.Contains(t, err.Error(), `"gone"`)
	p := testPod(newNetNS(t))
	_, err = m.Setup(context.Background(), p)
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	require.Contains(t, err.Error(), p.ID)
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	up, _ := link(t, p.NetNS, "lo")
	assert.False(t, up)

	// Set up with a plugin that then goes.
	fakePlugin(t, n, "gone")
	m = n.manager(t)
	_, err = m.Setup(context.Background(), p)
	require.NoError(t, err)
	require.NoError(t, os.Remove(n.dir+"/bin/gone"))
	err = m.Teardown(context.Background(), p)
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	assert.Contains(t, err.Error(), `"gone"`)
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
	// The plugin back, a second Teardown finishes: cache entry and pin go.
	fakePlugin(t, n, "gone")
	require.NoError(t, m.Teardown(context.Background(), p))
	_, err = m.Cached(p)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = os.Stat(m.pin(p.ID))
	assert.True(t, os.IsNotExist(err), "the pin: %v", err)
}

// Configuration directories that give no network: unavailable, naming
// why.
func TestStatusBadConfig(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Options{ConfDir: dir + "/none", BinDirs: []string{pluginDir}, CacheDir: dir + "/cache"})
	require.NoError(t, err)
	err = m.Status()
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	assert.Contains(t, err.Error(), "no network configuration")

	conf := dir + "/conf"
	require.NoError(t, os.Mkdir(conf, 0o755))
	require.NoError(t, os.WriteFile(conf+"/README", []byte("not a configuration"), 0o644))
	m, err = New(Options{ConfDir: conf, BinDirs: []string{pluginDir}, CacheDir: dir + "/cache"})
	require.NoError(t, err)
	err = m.Status()
	require.True(t, errdefs.IsUnavailable(err), "%v", err)

	for name, content := range map[string]string{
		"10-a.conflist": `{"cniVersion": "1.0.0", "name": "x", "plugins": [`,
		"10-b.conflist": `{"cniVersion": "1.0.0", "name": "x", "plugins": []}`,
		"10-c.conflist": `{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}`,
		"10-d.conflist": `{"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}`,
		"10-e.conflist": `{"cniVersion": "1.0.0", "name": "a/b", "plugins": [{"type": "bridge"}]}`,
		"10-f.conf":     `{"cniVersion": "1.0.0", "name": "x"}`,
		"10-g.conflist": `{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../../bin/sh"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			conf := t.TempDir()
			require.NoError(t, os.WriteFile(conf+"/"+name, []byte(content), 0o644))
			// A later file that would do: the first file is the network.
			require.NoError(t, os.WriteFile(conf+"/99-ok.conflist", []byte(`{"cniVersion": "1.0.0", "name": "ok", "plugins": [{"type": "bridge"}]}`), 0o644))
			m, err := New(Options{ConfDir: conf, BinDirs: []string{pluginDir}, CacheDir: dir + "/cache"})
			require.NoError(t, err)
			err = m.Status()
			require.True(t, errdefs.IsUnavailable(err), "%v", err)
			t.Log(err)
		})
	}
}

// A single-plugin .conf is a network too, and the first file in lexical
// order is the one.
func TestStatusConf(t *testing.T) {
	_, err := os.Stat(pluginDir + "/bridge")
	if err != nil {
		t.Skip("needs the CNI plugins in " + pluginDir)
	}
	conf := t.TempDir()
	require.NoError(t, os.WriteFile(conf+"/20-b.conflist", []byte(`{"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "nosuch"}]}`), 0o644))
	require.NoError(t, os.WriteFile(conf+"/10-a.conf", []byte(`{"cniVersion": "1.0.0", "name": "a", "type": "bridge"}`), 0o644))
	m, err := New(Options{ConfDir: conf, BinDirs: []string{pluginDir}, CacheDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, m.Status())
	list, err := m.load()
	require.NoError(t, err)
	assert.Equal(t, "a", list.Name)
}

// What the plugins would be given is checked first: invalid-argument,
// naming the pod, and nothing run.
func TestBadPods(t *testing.T) {
	dir := t.TempDir()
	regular := dir + "/file"
	require.NoError(t, os.WriteFile(regular, nil, 0o644))
	m, err := New(Options{ConfDir: dir + "/conf", BinDirs: []string{pluginDir}, CacheDir: dir + "/cache"})
	require.NoError(t, err)
	_, err = New(Options{ConfDir: "conf"})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)

	good := Pod{ID: "abc123", Name: "web", Namespace: "default", UID: "u1", NetNS: "/proc/1/ns/net"}
	for name, mod := range map[string]func(*Pod){
		"no ID":            func(p *Pod) { p.ID = "" },
		"ID with a slash":  func(p *Pod) { p.ID = "../x" },
		"ID with a dash":   func(p *Pod) { p.ID = "-x" },
		"name with ;":      func(p *Pod) { p.Name = "web;K8S_POD_NAMESPACE=kube-system" },
		"namespace with =": func(p *Pod) { p.Namespace = "a=b" },
		"UID with newline": func(p *Pod) { p.UID = "u\n1" },
		"protocol":         func(p *Pod) { p.PortMappings = []PortMapping{{Protocol: "icmp", ContainerPort: 80, HostPort: 80}} },
		"container port":   func(p *Pod) { p.PortMappings = []PortMapping{{ContainerPort: 0, HostPort: 80}} },
		"host port":        func(p *Pod) { p.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: 70000}} },
		"host IP":          func(p *Pod) { p.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: 80, HostIP: "localhost"}} },
	} {
		t.Run(name, func(t *testing.T) {
			p := good
			mod(&p)
			_, err := m.Setup(context.Background(), p)
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
			require.True(t, strings.Contains(err.Error(), "pod "), "%v", err)
			require.True(t, errdefs.IsInvalidArgument(m.Teardown(context.Background(), p)))
		})
	}
	// Setup's namespace must be one, and not this process's.
	for name, netns := range map[string]string{
		"none":         "",
		"relative":     "run/netns/x",
		"missing":      dir + "/missing",
		"regular file": regular,
		"mount ns":     "/proc/self/ns/mnt",
		"the caller's": "/proc/thread-self/ns/net",
	} {
		t.Run("netns "+name, func(t *testing.T) {
			p := good
			p.NetNS = netns
			_, err := m.Setup(context.Background(), p)
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
			require.Contains(t, err.Error(), p.ID)
		})
	}
	// Teardown needs no namespace.
	require.NoError(t, m.Teardown(context.Background(), Pod{ID: "abc123"}))
}

// defaultConf is the conflist scripts/setup-cni.sh writes, its state
// directory as given.
func defaultConf(t *testing.T, state string) map[string]any {
	t.Helper()
	script, err := os.ReadFile("../../scripts/setup-cni.sh")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(script), "\tcat <<CONF\n")
	require.True(t, ok, "setup-cni.sh writes its conflist with cat <<CONF")
	body, _, ok := strings.Cut(rest, "\nCONF\n")
	require.True(t, ok)
	var conf map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.ReplaceAll(body, "$state", state)), &conf), "%s", body)
	return conf
}

// The network scripts/setup-cni.sh writes, on a bridge, range and state
// of the test's own: a pod set up with a host port, reached, torn down.
func TestDefaultConf(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{})
	conf := defaultConf(t, n.dir)
	plugins := conf["plugins"].([]any)
	bridge := plugins[0].(map[string]any)
	require.Equal(t, "berth-cni0", bridge["bridge"])
	ipam := bridge["ipam"].(map[string]any)
	require.Equal(t, n.dir+"/ipam", ipam["dataDir"])
	bridge["bridge"] = n.bridge
	ipam["ranges"] = [][]map[string]string{{{"subnet": n.subnet.String()}}}
	conf["name"] = n.name
	require.NoError(t, os.Remove(n.opts.ConfDir+"/10-test.conflist"))
	n.writeConf(t, "10-berth.conflist", conf)
	m := n.manager(t)
	require.NoError(t, m.Status())

	ctx := context.Background()
	p := testPod(newNetNS(t))
	hostPort := freePort(t)
	p.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(hostPort)}}
	r, err := m.Setup(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() { m.Teardown(context.Background(), p) })
	serve(t, p.NetNS, 80, "default")
	got, err := fetch("", net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort)))
	require.NoError(t, err)
	assert.Equal(t, "default", got)
	// The pod reaches itself through its own host port (hairpin).
	got, err = fetch(p.NetNS, net.JoinHostPort(n.gateway.String(), strconv.Itoa(hostPort)))
	require.NoError(t, err, "hairpin")
	assert.Equal(t, "default", got)

	require.NoError(t, m.Teardown(ctx, p))
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	assert.Empty(t, iptablesLines(t, p.ID))
	assert.Empty(t, iptablesLines(t, r.IPs[0].String()+"/32"))
}

// Pods set up and torn down at once: distinct addresses, nothing left;
// two Setups of one pod at once: one succeeds, the other is refused.
func TestConcurrentPods(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{portmap, firewall}})
	m := n.manager(t)
	ctx := context.Background()
	pods := make([]Pod, 6)
	for i := range pods {
		pods[i] = testPod(newNetNS(t))
		pods[i].PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	}
	errs := make(chan error, len(pods)+1)
	ips := make(chan string, len(pods)+1)
	same := pods[0]
	same.NetNS = newNetNS(t)
	for _, p := range append(pods, same) {
		go func() {
			r, err := m.Setup(ctx, p)
			if err == nil {
				ips <- r.IPs[0].String()
			}
			errs <- err
		}()
	}
	refused := 0
	for range len(pods) + 1 {
		if err := <-errs; err != nil {
			require.True(t, errdefs.IsAlreadyExists(err), "%v", err)
			require.Contains(t, err.Error(), same.ID)
			refused++
		}
	}
	require.Equal(t, 1, refused, "the second Setup of one pod")
	close(ips)
	seen := map[string]bool{}
	for ip := range ips {
		require.False(t, seen[ip], "%s given twice", ip)
		seen[ip] = true
	}
	require.Len(t, seen, len(pods))
	require.Len(t, n.leases(t), len(pods))
	require.Len(t, n.ports(t), len(pods))

	for _, p := range pods {
		go func() { errs <- m.Teardown(ctx, p) }()
	}
	for range pods {
		require.NoError(t, <-errs)
	}
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	for _, p := range pods {
		assert.Empty(t, iptablesLines(t, p.ID))
	}
	for ip := range seen {
		assert.Empty(t, iptablesLines(t, ip+"/32"))
	}
}

// A Setup whose context is done: canceled, and nothing left behind.
func TestSetupCanceled(t *testing.T) {
	requireCNI(t)
	n := newTestNet(t, netConf{extra: []map[string]any{portmap}})
	m := n.manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := testPod(newNetNS(t))
	_, err := m.Setup(ctx, p)
	require.True(t, errdefs.IsCanceled(err), "%v", err)
	assert.Empty(t, n.ports(t))
	assert.Empty(t, n.leases(t))
	_, err = os.Stat(m.pin(p.ID))
	assert.True(t, os.IsNotExist(err), "the pin: %v", err)
	_, err = m.Cached(p)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}
