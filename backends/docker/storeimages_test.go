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

// An image berth loaded into the daemon from its store leaves the daemon
// with the last container that used it: no "<none>" images pile up.
func TestStoreImageRemovedWithLastContainer(t *testing.T) {
	for _, host := range []string{plainHost, usernsHost} {
		t.Run(host, func(t *testing.T) {
			requireDaemon(t, host)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			h := &harness{host: host}
			rt := h.Open(t)
			var cli *client.Client
			require.True(t, rt.As(&cli))

			// An image of its own (its command names the test), so that
			// no other test's container holds it.
			layer, err := imagetest.DirTar(fixture.BusyboxTB(t))
			require.NoError(t, err)
			ref := "berth-test/released:" + runtimetest.NewID("v")
			res, err := rt.Images().ImportReader(ctx, bytes.NewReader(imagetest.DockerSave(imagetest.NewImage([][]byte{layer}, "/bin/echo", ref))), image.ImportOptions{Tags: image.TagPolicy{Name: ref}})
			require.NoError(t, err)
			imageID := res.Images[0].Config.String()

			var cs []*runtime.Container
			for range 2 {
				out := &fixture.SyncBuffer{}
				c, err := rt.Create(ctx, runtimetest.NewID("released"), &runtime.Config{Spec: runtime.DefaultSpec(""), Image: ref, IO: runtime.IO{Stdout: out}})
				require.NoError(t, err)
				require.NoError(t, c.Start(ctx))
				_, err = c.Wait(ctx)
				require.NoError(t, err)
				require.Equal(t, ref+"\n", out.String())
				cs = append(cs, c)
			}
			_, err = cli.ImageInspect(ctx, imageID)
			require.NoError(t, err, "the daemon holds the loaded image")

			require.NoError(t, cs[0].Delete(ctx, runtime.DeleteOptions{}))
			_, err = cli.ImageInspect(ctx, imageID)
			require.NoError(t, err, "the image stays while another container uses it")

			require.NoError(t, cs[1].Delete(ctx, runtime.DeleteOptions{}))
			_, err = cli.ImageInspect(ctx, imageID)
			require.Error(t, err, "the image left the daemon with its last container")
			list, err := cli.ImageList(ctx, client.ImageListOptions{All: true})
			require.NoError(t, err)
			for _, im := range list.Items {
				require.NotEqual(t, imageID, im.ID, "docker images still lists it")
			}
			for _, c := range cs {
				require.Empty(t, h.Leftovers(t, rt, c.ID()))
			}
		})
	}
}
