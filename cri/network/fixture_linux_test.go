package network

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

// pluginDir is where Debian's containernetworking-plugins puts the
// plugins.
const pluginDir = "/usr/lib/cni"

// requireCNI skips (fails under CI=true) a test that needs root, the
// plugins and iptables.
func requireCNI(t *testing.T) {
	t.Helper()
	fixture.RequireRoot(t)
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		_, err := os.Stat(filepath.Join(pluginDir, p))
		fixture.Require(t, err == nil, "needs the CNI plugins in "+pluginDir+" (containernetworking-plugins; scripts/setup.sh installs it)")
	}
	for _, c := range []string{"ip", "iptables-save"} {
		_, err := exec.LookPath(c)
		fixture.Require(t, err == nil, "needs "+c)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testNet is a network of a test's own: a bridge, a /24 (or smaller)
// range no host interface is in, an IPAM directory and a cache in the
// test's temporary directory.
type testNet struct {
	name, bridge string
	subnet       *net.IPNet
	gateway      net.IP
	dir          string // holds conf/, cache/, ipam/ and bin/
	opts         Options
}

// netConf is a test network's configuration: the range's prefix length
// (24 or more), whether the bridge masquerades, the plugins after it.
type netConf struct {
	prefix int
	noMasq bool
	extra  []map[string]any
}

// newTestNet writes a conflist of bridge (with host-local IPAM) and then
// the extra plugins into a configuration directory of the test's own,
// and removes the bridge when the test ends.
func newTestNet(t *testing.T, c netConf) *testNet {
	t.Helper()
	if c.prefix == 0 {
		c.prefix = 24
	}
	id := randHex(4)
	n := &testNet{name: "berth-test-" + id, bridge: "bt" + id, dir: t.TempDir()}
	n.subnet = freeSubnet(t, c.prefix)
	n.gateway = make(net.IP, 4)
	copy(n.gateway, n.subnet.IP.To4())
	n.gateway[3]++
	n.opts = Options{ConfDir: filepath.Join(n.dir, "conf"), BinDirs: []string{pluginDir}, CacheDir: filepath.Join(n.dir, "cache")}
	plugins := []any{map[string]any{
		"type": "bridge", "bridge": n.bridge, "isGateway": true, "ipMasq": !c.noMasq, "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": n.subnet.String()}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": filepath.Join(n.dir, "ipam"),
		},
	}}
	for _, e := range c.extra {
		plugins = append(plugins, e)
	}
	n.writeConf(t, "10-test.conflist", map[string]any{"cniVersion": "1.0.0", "name": n.name, "plugins": plugins})
	t.Cleanup(func() {
		// Pins a failed test left, before the temporary directory goes.
		pins, _ := filepath.Glob(filepath.Join(n.opts.CacheDir, "netns", "*"))
		for _, p := range pins {
			unpinNetNS(p)
		}
		if _, err := net.InterfaceByName(n.bridge); err == nil {
			if out, err := exec.Command("ip", "link", "delete", n.bridge).CombinedOutput(); err != nil {
				t.Errorf("ip link delete %s: %v: %s", n.bridge, err, out)
			}
		}
	})
	return n
}

// The plugins after the bridge in scripts/setup-cni.sh's network.
var (
	portmap  = map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}
	firewall = map[string]any{"type": "firewall"}
)

func (n *testNet) writeConf(t *testing.T, name string, conf any) {
	t.Helper()
	b, err := json.Marshal(conf)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(n.opts.ConfDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(n.opts.ConfDir, name), b, 0o644))
}

func (n *testNet) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(n.opts)
	require.NoError(t, err)
	return m
}

// leaseFile is host-local's record of ip's lease.
func (n *testNet) leaseFile(ip net.IP) string {
	return filepath.Join(n.dir, "ipam", n.name, ip.String())
}

// leases are the addresses host-local has handed out.
func (n *testNet) leases(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.dir, "ipam", n.name))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// ports are the host ends of the veth pairs on the bridge.
func (n *testNet) ports(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show", "master", n.bridge).CombinedOutput()
	if err != nil && strings.Contains(string(out), "does not exist") {
		return nil
	}
	require.NoError(t, err, "%s", out)
	var ports []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ports = append(ports, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	return ports
}

// freeSubnet picks a range in 10.98.0.0/16 that no host interface has an
// address in.
func freeSubnet(t *testing.T, prefix int) *net.IPNet {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for range 100 {
		b := make([]byte, 1)
		rand.Read(b)
		if b[0] == 0 || b[0] == 255 {
			continue
		}
		_, sub, err := net.ParseCIDR(fmt.Sprintf("10.98.%d.0/%d", b[0], prefix))
		require.NoError(t, err)
		_, wide, _ := net.ParseCIDR(fmt.Sprintf("10.98.%d.0/24", b[0]))
		taken := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (wide.Contains(ipn.IP) || ipn.Contains(wide.IP)) {
				taken = true
			}
		}
		if !taken {
			return sub
		}
	}
	t.Fatal("no free /24 in 10.98.0.0/16")
	return nil
}

// iptablesLines are the lines of iptables-save (every table) that hold s.
func iptablesLines(t *testing.T, s string) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}

// newNetNS makes a network namespace (ip netns add) and returns its path;
// it is deleted when the test ends, if it is still there.
func newNetNS(t *testing.T) string {
	t.Helper()
	name := "berth-test-" + randHex(4)
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	t.Cleanup(func() { deleteNetNS(t, name) })
	return "/run/netns/" + name
}

func deleteNetNS(t *testing.T, path string) {
	t.Helper()
	name := filepath.Base(path)
	if _, err := os.Stat("/run/netns/" + name); err != nil {
		return
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		t.Errorf("ip netns delete %s: %v: %s", name, err, out)
	}
}

// inNetNS runs f on a thread in the network namespace at path, then
// moves the thread back (or, should that fail, lets it end with f).
// Sockets f opens stay in that namespace, whichever thread uses them
// later.
func inNetNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(back)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- f()
		if unix.Setns(back, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}

// link describes an interface of the namespace at path: whether it is up
// and its addresses.
func link(t *testing.T, path, name string) (up bool, ips []net.IP) {
	t.Helper()
	require.NoError(t, inNetNS(path, func() error {
		i, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		up = i.Flags&net.FlagUp != 0
		addrs, err := i.Addrs()
		for _, a := range addrs {
			ips = append(ips, a.(*net.IPNet).IP)
		}
		return err
	}))
	return up, ips
}
