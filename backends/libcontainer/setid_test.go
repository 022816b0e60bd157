package libcontainer_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// A setuid root program and a program with a file capability
// (CAP_NET_BIND_SERVICE), run by uid 1000 from an image, take effect when
// no_new_privs is off and the runtime's store was opened WithSetidRootfs;
// from a store opened without it, on the same directory, the same image
// runs with both cleared; no_new_privs stops both either way.
func TestSetidImage(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	prog, err := os.ReadFile(filepath.Join(fixture.TenantTool(t), "tenant"))
	require.NoError(t, err)
	base, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	const netBindCap = "\x01\x00\x00\x02" + "\x00\x04\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00"
	progs := imagetest.Tar(
		imagetest.Dir("opt/"),
		imagetest.Entry{Name: "opt/setuid", Body: string(prog), Mode: 0o4755},
		imagetest.Entry{Name: "opt/filecap", Body: string(prog), Mode: 0o755, Xattrs: map[string]string{"security.capability": netBindCap}},
	)
	im := imagetest.NewImage([][]byte{base, progs}, "/bin/true")
	im.Tags = []string{"setid-test:1"}

	work := fixture.TempDir(t)
	images := filepath.Join(work, "images")
	plain, err := image.Open(images)
	require.NoError(t, err)
	setid, err := image.Open(images, image.WithSetidRootfs())
	require.NoError(t, err)
	_, err = plain.ImportReader(ctx, bytes.NewReader(imagetest.DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)

	run := func(t *testing.T, store *image.Store, name string, noNewPrivs bool) string {
		t.Helper()
		root := filepath.Join(work, name)
		e, err := libcontainer.Open(root)
		require.NoError(t, err)
		rt, err := runtime.New(e, runtime.WithStateDir(root), runtime.WithImageStore(store))
		require.NoError(t, err)
		defer rt.Close()
		spec := runtime.DefaultSpec("", "/bin/sh", "-c", "/opt/setuid ids; /opt/filecap ids")
		spec.Process.User.UID, spec.Process.User.GID = 1000, 1000
		spec.Process.NoNewPrivileges = noNewPrivs
		var out fixture.SyncBuffer
		c, err := rt.Create(ctx, runtimetest.NewID("setid"), &runtime.Config{Spec: spec, Image: "setid-test:1", IO: runtime.IO{Stdout: &out, Stderr: &out}})
		require.NoError(t, err)
		defer func() { require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true})) }()
		require.NoError(t, c.Start(ctx))
		es, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, 0, es.Code, "output: %s", out.String())
		return out.String()
	}
	// The effective capabilities of each program's run, from its line.
	capEff := func(t *testing.T, out string) []string {
		var caps []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			_, c, ok := strings.Cut(line, "capeff=")
			require.True(t, ok, "output: %s", out)
			caps = append(caps, c)
		}
		require.Len(t, caps, 2, "output: %s", out)
		return caps
	}

	out := run(t, setid, "setid", false)
	assert.Contains(t, out, "uid=1000 euid=0 ", "the setuid bit takes effect: %s", out)
	assert.Equal(t, "0000000000000400", capEff(t, out)[1], "the file capability takes effect: %s", out)

	out = run(t, plain, "plain", false)
	assert.NotContains(t, out, "euid=0", "a default store's tree has no setuid bit: %s", out)
	assert.Equal(t, "0000000000000000", capEff(t, out)[1], "nor file capability: %s", out)

	out = run(t, setid, "setid-nnp", true)
	assert.NotContains(t, out, "euid=0", "no_new_privs stops the setuid bit: %s", out)
	assert.Equal(t, "0000000000000000", capEff(t, out)[1], "and the file capability: %s", out)

	// Both trees went with their containers' holds; removing the image
	// leaves nothing unpacked.
	_, err = plain.Remove(ctx, "setid-test:1")
	require.NoError(t, err)
	for _, d := range []string{"rootfs", "rootfs-setid"} {
		ents, err := os.ReadDir(filepath.Join(images, d))
		require.NoError(t, err)
		for _, e := range ents {
			assert.True(t, strings.HasSuffix(e.Name(), ".lock"), "%s/%s left", d, e.Name())
		}
	}
}
