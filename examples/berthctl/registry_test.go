package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// testRegistry serves an in-memory registry on addr (loopback when
// empty) and returns its HOST:PORT.
func testRegistry(t *testing.T, addr string) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestImageRegistryPushPull(t *testing.T) {
	host := testRegistry(t, "")
	ref := host + "/x/y:1"
	c := newImageCtl(t)
	d := c.imported("to the registry", "app:1")

	assert.Equal(t, d+"\n", c.ok("push", "app:1", ref), "the stored manifest, byte for byte")
	assert.Equal(t, d+"\n", c.ok("push", "app:1", ref), "pushed again: the same")
	assert.Equal(t, "untagged app:1\ndeleted "+d+"\n", c.ok("rm", "app:1"))
	assert.Equal(t, ref+" "+d+"\n", c.ok("pull", ref), "the same image back, tagged as pulled")
	assert.Equal(t, ref+" "+d+"\n", c.ok("pull", ref), "pulled again: the same")

	// --tag names the image instead, before or after the reference.
	other := newImageCtl(t)
	assert.Equal(t, "mine:2 "+d+"\n", other.ok("pull", ref, "--tag", "mine:2"))
	assert.Equal(t, "mine:3 "+d+"\n", other.ok("pull", "--tag", "mine:3", ref))
	assert.NotContains(t, other.ok("ls"), ref, "--tag: the reference's own tag is not made")
	// A digest makes no tag.
	assert.Equal(t, d+"\n", newImageCtl(t).ok("pull", host+"/x/y@"+d))

	// push REF alone: REF is the registry's reference too.
	assert.Equal(t, host+"/x/z:2 "+d+"\n", c.ok("tag", ref, host+"/x/z:2"))
	assert.Equal(t, d+"\n", c.ok("push", host+"/x/z:2"))
	assert.Equal(t, "pulled:1 "+d+"\n", newImageCtl(t).ok("pull", "--tag", "pulled:1", host+"/x/z:2"))

	requireFailure(t, c.run("pull", host+"/x/missing:1"), "not-found")
	requireFailure(t, c.run("pull", host+"/x/y:missing"), "not-found")
	requireFailure(t, c.run("push", "nope:1", host+"/x/y:2"), "not-found")
	requireFailure(t, c.run("pull", "--tag", "BAD", ref), "invalid-argument")
	requireFailure(t, c.run("push", "app:1", "BAD REF"), "invalid-argument")
	// A tag that names another image moves only on a pull of its own
	// reference (as docker pull does), never for --tag.
	e := c.imported("another", "other:1")
	requireFailure(t, c.run("pull", "--tag", "other:1", ref), "already-exists")
	assert.Regexp(t, lsRow("other:1", e), c.ok("ls"))
}

func TestImageRegistryMirror(t *testing.T) {
	host := testRegistry(t, "")
	c := newImageCtl(t)
	d := c.imported("mirrored", "app:1")
	c.ok("push", "app:1", host+"/x/y:1")

	// registry.invalid never resolves: the image comes from the mirror,
	// the flag before the command or after it.
	mirror := "registry.invalid=http://" + host
	other := newImageCtl(t)
	r := invoke(t, "", "--root", other.root, "--registry-mirror", mirror, "image", "pull", "registry.invalid/x/y:1")
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Equal(t, "registry.invalid/x/y:1 "+d+"\n", r.stdout)
	assert.Empty(t, r.stderr)
	assert.Equal(t, "m:1 "+d+"\n", newImageCtl(t).ok("pull", "registry.invalid/x/y:1", "--tag", "m:1",
		"--registry-mirror", "other.invalid=http://127.0.0.1:9", "--registry-mirror", mirror))
	// A mirror without the image: the registry is asked next.
	empty := testRegistry(t, "")
	r = newImageCtl(t).run("pull", "--registry-mirror", host+"=http://"+empty, host+"/x/y:1")
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Equal(t, host+"/x/y:1 "+d+"\n", r.stdout)
}

// TestImageInsecureRegistry: a registry off loopback is reached over plain
// HTTP only when named by --insecure-registry.
func TestImageInsecureRegistry(t *testing.T) {
	ip := nonLoopbackIP(t)
	host := testRegistry(t, net.JoinHostPort(ip, "0"))
	c := newImageCtl(t)
	d := c.imported("insecure", "app:1")
	// Without the flag the client speaks HTTPS, which the registry does
	// not: refused (whatever class the library gives it).
	r := c.run("push", "app:1", host+"/x/y:1")
	require.Equal(t, exitFailure, r.code, "stderr %q", r.stderr)
	assert.Regexp(t, `^berthctl: [a-z-]+: .*HTTPS.*\n$`, r.stderr)
	assert.Equal(t, d+"\n", c.ok("push", "app:1", host+"/x/y:1", "--insecure-registry", host))
	r = invoke(t, "", "--root", c.root, "--insecure-registry", host, "image", "pull", "--tag", "back:1", host+"/x/y:1")
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Equal(t, "back:1 "+d+"\n", r.stdout)
	r = newImageCtl(t).run("pull", host+"/x/y:1")
	require.Equal(t, exitFailure, r.code, "stderr %q", r.stderr)
	assert.Regexp(t, `^berthctl: [a-z-]+: .*HTTPS.*\n$`, r.stderr)
	requireFailure(t, newImageCtl(t).run("pull", "--insecure-registry", "192.0.2.99:5000", host+"/x/y:1"), classOf(r))
}

// nonLoopbackIP is an IPv4 address of this machine off loopback, or a
// skip.
func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("needs an IPv4 address off loopback")
	return ""
}

// classOf is the class of berthctl's failure line.
func classOf(r result) string {
	if m := regexp.MustCompile(`^berthctl: ([a-z-]+): `).FindStringSubmatch(r.stderr); m != nil {
		return m[1]
	}
	return ""
}

// TestImageProgressOnTerminal runs pull, push and import with stderr on a
// terminal: bars there, stdout as without them.
func TestImageProgressOnTerminal(t *testing.T) {
	host := testRegistry(t, "")
	c := newImageCtl(t)
	a := archive(t, strings.Repeat("progress ", 1<<16), true, "app:1")
	out, bars := onTerminal(t, "--root", c.root, "image", "import", "--expect-tag", "app:1", a)
	assert.Regexp(t, `^app:1 sha256:[0-9a-f]{64}\n$`, out)
	assert.Contains(t, bars, "importing image.tar")
	assert.Regexp(t, `\d+(\.\d)? [KM]iB / \d+(\.\d)? [KM]iB`, bars)
	d := strings.Fields(out)[1]

	blobBar := regexp.MustCompile(`[0-9a-f]{12} +\[[=>-]+\] +\d`)
	out, bars = onTerminal(t, "--root", c.root, "image", "push", "app:1", host+"/x/y:1")
	assert.Equal(t, d+"\n", out)
	assert.Regexp(t, blobBar, bars)
	assert.Contains(t, bars, "/s")

	other := newImageCtl(t)
	out, bars = onTerminal(t, "--root", other.root, "image", "pull", host+"/x/y:1")
	assert.Equal(t, host+"/x/y:1 "+d+"\n", out)
	assert.Regexp(t, blobBar, bars)
	assert.NotContains(t, bars, "berthctl:")

	// A failure: its line after the bars.
	_, bars = onTerminal(t, "--root", other.root, "image", "pull", host+"/x/missing:1")
	assert.Contains(t, bars, "berthctl: not-found: ")
}

// onTerminal runs berthctl with stderr on a new pseudo-terminal and
// returns its stdout and what it drew on the terminal.
func onTerminal(t *testing.T, args ...string) (stdout, terminal string) {
	t.Helper()
	ptmx, pts := openPty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, pts
	var term bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(&term, ptmx) })
	err := cmd.Run()
	pts.Close()
	wg.Wait() // the terminal is drained once its last writer is gone
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("berthctl %v: %v", args, err)
	}
	t.Logf("berthctl %s -> %v\nstdout: %q\nterminal: %q", strings.Join(args, " "), err, out.String(), term.String())
	return out.String(), term.String()
}

// openPty opens a pseudo-terminal of 120 columns, or skips.
func openPty(t *testing.T) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	require.NoError(t, unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	require.NoError(t, err)
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { pts.Close() })
	require.NoError(t, unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}))
	return ptmx, pts
}
