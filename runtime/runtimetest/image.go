package runtimetest

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// importBusybox imports a busybox image, built in the test, into the
// runtime's store under a name of its own, and returns that name. The
// image's command is "/bin/echo image-cmd".
func importBusybox(t *testing.T, rt *runtime.Runtime) string {
	t.Helper()
	layer, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	name := "berth-test/busybox:" + NewID("img")
	archive := imagetest.DockerSave(imagetest.NewImage([][]byte{layer}, "/bin/echo", "image-cmd"))
	_, err = rt.Images().ImportReader(testContext(t), bytes.NewReader(archive), image.ImportOptions{Tags: image.TagPolicy{Name: name}})
	require.NoError(t, err)
	return name
}

func testImage(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if rt.Images() == nil {
		t.Skip("the harness opened the runtime without an image store")
	}
	ref := importBusybox(t, rt)
	run := func(cfg *runtime.Config) (string, *runtime.Container) {
		t.Helper()
		out := newBuffer()
		cfg.IO = runtime.IO{Stdout: out, Stderr: out}
		cfg.Image = ref
		c := create(t, rt, NewID("image"), cfg)
		require.NoError(t, c.Start(ctx))
		es, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, 0, es.Code, "output: %s", out.String())
		return out.String(), c
	}
	out, first := run(&runtime.Config{Spec: runtime.DefaultSpec("", "/bin/sh", "-c", "echo from-image > /written; head -1 /etc/passwd")})
	require.Equal(t, "root:x:0:0:root:/root:/bin/sh\n", out)
	out, _ = run(&runtime.Config{Spec: runtime.DefaultSpec("", "/bin/sh", "-c", "cat /written 2>/dev/null || echo absent")})
	require.Equal(t, "absent\n", out, "each container writes a layer of its own")
	out, _ = run(&runtime.Config{Spec: runtime.DefaultSpec("")})
	require.Equal(t, "image-cmd\n", out, "without arguments the image's command runs")
	if rt.Capabilities().UserNamespace {
		out, _ = run(&runtime.Config{Spec: runtime.DefaultSpec("", "/bin/sh", "-c", "touch /new-file && ls -n /new-file | cut -c1-30; echo mkdir > /etc/x && echo copied-up"), UserNamespace: true})
		require.Contains(t, out, "copied-up", "root in a user namespace writes the image's files: %s", out)
		require.Contains(t, out, " 0 ", "its files belong to its root: %s", out)
	}
	if rt.Capabilities().Snapshot {
		var archive bytes.Buffer
		require.NoError(t, first.Snapshot(ctx, &archive))
		files := tarFiles(t, &archive)
		require.Equal(t, "from-image\n", files["written"], "the snapshot holds the container's writes")
		require.Contains(t, files, "bin/busybox", "and the image's files")
	}
	_, err := rt.Create(ctx, NewID("noimage"), &runtime.Config{Spec: runtime.DefaultSpec("", "/bin/true"), Image: "berth-test/missing:nothere"})
	require.Truef(t, isNotFound(err), "an unknown image: %v", err)
}

func tarFiles(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	files := map[string]string{}
	tr := tarReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[trimDot(hdr.Name)] = string(b)
	}
}

// A running container committed as an image (its snapshot), exported as a
// docker-save archive, imported into another runtime's store and run there,
// holds what was written before the snapshot.
func testCommitExportImport(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if rt.Images() == nil {
		t.Skip("the harness opened the runtime without an image store")
	}
	ref := importBusybox(t, rt)
	out := newBuffer()
	cfg := &runtime.Config{Spec: runtime.DefaultSpec("", "/bin/sh", "-c", "echo written-before > /data; echo ready; sleep 1000"), Image: ref,
		IO: runtime.IO{Stdout: out, Stderr: out}}
	c := create(t, rt, NewID("commit"), cfg)
	if !rt.Capabilities().Snapshot {
		_, err := c.Commit(ctx, runtime.CommitOptions{Tag: "berth-test/committed:1"})
		require.Truef(t, isNotImplemented(err), "commit without snapshots: %v", err)
		return
	}
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "ready"))
	tag := "berth-test/committed:" + NewID("v")
	im, err := c.Commit(ctx, runtime.CommitOptions{Tag: tag})
	require.NoError(t, err)
	require.Equal(t, []string{tag}, im.Tags)
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)

	var archive bytes.Buffer
	require.NoError(t, rt.Images().Export(ctx, tag, &archive, image.ExportOptions{Format: image.FormatDocker}))
	other := h.Open(t)
	res, err := other.Images().ImportReader(ctx, bytes.NewReader(archive.Bytes()), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{tag}}})
	require.NoError(t, err)
	require.Equal(t, im.Digest, res.Images[0].Digest, "the round trip keeps the digest")

	got := newBuffer()
	c2 := create(t, other, NewID("restored"), &runtime.Config{Spec: runtime.DefaultSpec("", "/bin/cat", "/data"), Image: tag, IO: runtime.IO{Stdout: got, Stderr: got}})
	require.NoError(t, c2.Start(ctx))
	_, err = c2.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, "written-before\n", got.String())
}
