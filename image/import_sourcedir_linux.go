package image

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

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

func (d *dirSource) open(p string) (*os.File, error) {
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV}
	fd, err := unix.Openat2(d.root, p, how)
	for err == unix.EINTR || err == unix.EAGAIN {
		fd, err = unix.Openat2(d.root, p, how)
	}
	if err == unix.ELOOP {
		return nil, fmt.Errorf("layout file %q is reached through a symlink: %w", p, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, classifyOS(&os.PathError{Op: "open", Path: p, Err: err})
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("layout file %q is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	}
	return f, nil
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
