package registry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
)

func newStore(t *testing.T) *image.Store {
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	return s
}

func newClient(t *testing.T, opts Options) *Client {
	c, err := New(opts)
	require.NoError(t, err)
	return c
}

func smallImage(files ...string) *imagetest.Image {
	var es []imagetest.Entry
	for _, f := range files {
		es = append(es, imagetest.File(f, f+"\n"))
	}
	return imagetest.NewImage([][]byte{imagetest.Gzip(imagetest.Tar(es...))}, "/bin/sh")
}

func TestPullFromFake(t *testing.T) {
	f := newFakeRegistry(t)
	im := smallImage("etc/a")
	d := f.putImage("tenant/app", "1", im)
	s := newStore(t)
	c := newClient(t, Options{})
	res, err := c.Pull(context.Background(), s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.NoError(t, err)
	require.Len(t, res.Images, 1)
	require.Equal(t, d, res.Images[0].Digest)
	got, err := s.Get(context.Background(), f.host()+"/tenant/app:1")
	require.NoError(t, err)
	require.Equal(t, d, got.Digest)
}
