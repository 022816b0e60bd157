package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
)

// busyboxArchive writes a docker-save archive of the busybox fixture tagged
// bb:latest, whose command prints "image-cmd".
func busyboxArchive(t *testing.T) string {
	t.Helper()
	layer, err := imagetest.DirTar(rootfs)
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{layer}, "/bin/echo", "image-cmd")
	im.Tags = []string{"bb:latest"}
	p := filepath.Join(t.TempDir(), "bb.tar")
	require.NoError(t, os.WriteFile(p, imagetest.DockerSave(im), 0o644))
	return p
}

// The embedded engine runs images of the store under --root.
func TestRunImage(t *testing.T) {
	requireEngine(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	ctl := func(args ...string) result { return invoke(t, "", append([]string{"--root", root}, args...)...) }
	r := ctl("image", "import", "--expect-tag", "bb:latest", busyboxArchive(t))
	require.Equal(t, 0, r.code, r.stderr)
	r = ctl("run", "--rm", "--image", "bb:latest", "--", "/bin/echo", "hi")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "hi\n", r.stdout)
	r = ctl("run", "--rm", "--image", "bb:latest")
	require.Equal(t, "image-cmd\n", r.stdout, "without a command, the image's")
	r = ctl("run", "--rm", "--userns", "--image", "bb:latest", "--", "/bin/sh", "-c", "echo x > /etc/new && cat /etc/new")
	require.Equal(t, "x\n", r.stdout, r.stderr)
	requireFailure(t, ctl("run", "--rm", "--image", "nosuch:latest", "--", "/bin/true"), "not-found")
	r = ctl("ps", "-q")
	require.Empty(t, r.stdout)
}

// The disk-image engine: a disk of its own, grown online (xfs disks grow
// where the sandbox lacks CAP_SYS_RESOURCE), committed as an image by
// snapshot, and gone with the container.
func TestParallels(t *testing.T) {
	requireEngine(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	ctl := func(args ...string) result {
		return invoke(t, "", append([]string{"--root", root, "--backend", "parallels", "--disk-fs", "xfs"}, args...)...)
	}
	r := ctl("create", "--name", "disk1", "--rootfs", rootfs, "--disk-size", "320m", "--", "/bin/sh", "-c", "echo kept > /kept; sleep 300")
	require.Equal(t, 0, r.code, r.stderr)
	defer ctl("rm", "-f", "disk1")
	require.Equal(t, 0, ctl("start", "disk1").code)
	df := func() string {
		r := ctl("exec", "disk1", "--", "/bin/sh", "-c", "df -k / | tail -1")
		require.Equal(t, 0, r.code, r.stderr)
		return strings.Fields(r.stdout)[1]
	}
	before := df()
	r = ctl("resize-disk", "disk1", "640m")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotEqual(t, before, df(), "the running container sees the grown disk")
	requireFailure(t, ctl("resize-disk", "disk1", "100m"), "invalid-argument")

	r = ctl("snapshot", "disk1", "snap:1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, regexp.MustCompile(`^snap:1 sha256:[0-9a-f]{64}\n$`), r.stdout)

	require.Equal(t, 0, ctl("rm", "-f", "disk1").code)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotContains(t, string(mi), root)
	_, err = os.Stat(filepath.Join(root, "disks", "disk1"))
	require.True(t, os.IsNotExist(err), "the disk image is gone")
	r = ctl("run", "--rm", "--image", "snap:1", "--", "/bin/cat", "/kept")
	require.Equal(t, "kept\n", r.stdout, "the snapshot runs: %s", r.stderr)
	// The root is the parallels engine's: another backend is refused
	// there (it would take their volume records and root disks for
	// leftovers), and takes the snapshot through an archive.
	requireFailure(t, invoke(t, "", "--root", root, "ps"), "failed-precondition")
	archive := filepath.Join(t.TempDir(), "snap.tar")
	r = ctl("image", "export", "snap:1", archive)
	require.Equal(t, 0, r.code, r.stderr)
	other := filepath.Join(fixture.TempDir(t), "state")
	r = invoke(t, "", "--root", other, "image", "import", "--expect-tag", "snap:1", archive)
	require.Equal(t, 0, r.code, r.stderr)
	r = invoke(t, "", "--root", other, "run", "--rm", "--image", "snap:1", "--", "/bin/cat", "/kept")
	require.Equal(t, "kept\n", r.stdout, "the snapshot runs on the embedded engine too: %s", r.stderr)
	requireFailure(t, invoke(t, "", "--root", other, "resize-disk", "nosuch", "1g"), "not-found")
	requireFailure(t, invoke(t, "", "--root", other, "run", "--rm", "--rootfs", rootfs, "--disk-size", "1g", "--", "/bin/true"), "not-implemented")
}

// skopeo pushes the busybox fixture to the real registry (setup's
// docker-registry); berthctl pulls it and runs it, on the embedded engine.
func TestRunImageFromRealRegistry(t *testing.T) {
	requireEngine(t)
	host := os.Getenv("BERTH_REGISTRY")
	if host == "" {
		host = "127.0.0.1:5111"
	}
	resp, err := http.Get("http://" + host + "/v2/")
	if err == nil {
		resp.Body.Close()
	}
	fixture.Require(t, err == nil, "needs a registry at "+host+" (scripts/setup-registry.sh starts it)")
	skopeo, err := exec.LookPath("skopeo")
	fixture.Require(t, err == nil, "needs skopeo (scripts/setup-registry.sh installs it)")

	layer, err := imagetest.DirTar(rootfs)
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{imagetest.Gzip(layer), imagetest.Tar(imagetest.File("etc/motd", "pulled\n"))}, "/bin/cat", "/etc/motd")
	layout := filepath.Join(t.TempDir(), "layout")
	require.NoError(t, imagetest.WriteDir(layout, imagetest.OCIEntries(im)...))
	ref := fmt.Sprintf("%s/berth-test/run-%d:1", host, time.Now().UnixNano())
	out, err := exec.Command(skopeo, "copy", "--dest-tls-verify=false", "oci:"+layout, "docker://"+ref).CombinedOutput()
	require.NoError(t, err, "%s", out)

	root := filepath.Join(fixture.TempDir(t), "state")
	ctl := func(args ...string) result { return invoke(t, "", append([]string{"--root", root}, args...)...) }
	r := ctl("image", "pull", ref)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, ref+" sha256:")
	r = ctl("run", "--rm", "--image", ref)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "pulled\n", r.stdout)
	r = ctl("run", "--rm", "--userns", "--image", ref, "--", "/bin/sh", "-c", "id -u; cat /etc/motd")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "0\npulled\n", r.stdout)
}
