package docker

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// A tenant's archive that tags ubuntu:latest cannot move the daemon's
// ubuntu:latest through berth, even when the caller expected the tag in
// berth's store: Docker only loads an untagged archive berth wrote.
func TestArchiveCannotMoveDaemonTag(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, err := client.New(client.WithHost(plainHost), client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	defer cli.Close()

	// The daemon's ubuntu:latest: the busybox fixture under that name.
	state := fixture.TempDir(t)
	h := &harness{host: plainHost}
	rt := h.open(t, state)
	// The seed container keeps the image berth loaded in the daemon
	// until it is tagged (an untagged one goes with its last container).
	seedC, err := rt.Create(ctx, runtimetest.NewID("seed"), h.Config(t, "/bin/true"))
	require.NoError(t, err)
	defer seedC.Delete(context.Background(), runtime.DeleteOptions{})
	seed, err := rt.Images().Get(ctx, busyboxRef)
	require.NoError(t, err)
	// The daemon is shared with the host: whatever ubuntu:latest it has is
	// put back at the end.
	if prev, err := cli.ImageInspect(ctx, "ubuntu:latest"); err == nil {
		t.Cleanup(func() {
			_, _ = cli.ImageTag(context.Background(), client.ImageTagOptions{Source: prev.ID, Target: "ubuntu:latest"})
		})
	} else {
		t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), "ubuntu:latest", client.ImageRemoveOptions{}) })
	}
	_, err = cli.ImageTag(ctx, client.ImageTagOptions{Source: seed.ConfigDigest.String(), Target: "ubuntu:latest"})
	require.NoError(t, err)
	before, err := cli.ImageInspect(ctx, "ubuntu:latest")
	require.NoError(t, err)

	// The hostile archive: another image claiming ubuntu:latest.
	layer, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	evil := imagetest.NewImage([][]byte{layer, imagetest.Tar(imagetest.File("pwned", "yes\n"))}, "/bin/sh")
	evil.Tags = []string{"ubuntu:latest"}
	res, err := rt.Images().ImportReader(ctx, bytes.NewReader(imagetest.DockerSave(evil)), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"ubuntu:latest"}}})
	require.NoError(t, err)
	require.Len(t, res.Images, 1)

	var out bytes.Buffer
	cfg := &runtime.Config{Spec: runtime.DefaultSpec("", "/bin/cat", "/pwned"), Image: "ubuntu:latest", IO: runtime.IO{Stdout: &out}}
	c, err := rt.Create(ctx, runtimetest.NewID("evil"), cfg)
	require.NoError(t, err)
	defer c.Delete(context.Background(), runtime.DeleteOptions{Force: true})
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, "yes\n", out.String(), "the container runs the image berth's store names ubuntu:latest")

	after, err := cli.ImageInspect(ctx, "ubuntu:latest")
	require.NoError(t, err)
	require.Equal(t, before.ID, after.ID, "the daemon's ubuntu:latest did not move")
	loaded, err := cli.ImageInspect(ctx, res.Images[0].Config.String())
	require.NoError(t, err)
	require.Empty(t, loaded.RepoTags, "the archive berth loaded carried no tag")
}
