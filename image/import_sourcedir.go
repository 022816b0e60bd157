package image

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/image/ocilayout"
)

// dirSource reads an OCI layout directory. Every file is opened under the
// directory with openat2 and may not be reached through a symlink.
type dirSource struct {
	in     *ingest
	root   int
	staged map[string]*staged
	count  *countReader
}

func (d *dirSource) doc(_ context.Context, p string) ([]byte, bool, error) {
	f, err := d.open(p)
	if errdefs.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	d.count.r = f
	b, err := readCapped(p, d.count, d.in.lim.MaxJSONBytes)
	return b, err == nil, err
}

func (d *dirSource) blob(ctx context.Context, p string) (*staged, error) {
	if st, ok := d.staged[p]; ok {
		return st, nil
	}
	f, err := d.open(p)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("the layout has no file %q: %w", p, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	alg, want := digest.SHA256, digest.Digest("")
	if dg, ok := ocilayout.PathDigest(p); ok {
		alg, want = dg.Algorithm(), dg
	}
	d.count.r = f
	st, err := d.in.stage(ctx, p, d.count, alg, want)
	if err != nil {
		return nil, readErr(err)
	}
	d.staged[p] = st
	return st, nil
}
