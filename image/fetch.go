package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/internal/errclass"
)

// sharedPrefix names, in ingest/, a blob one pull fetched and verified,
// for concurrent pulls of the same blob from the same origin to link; its
// lock file is held while it is being fetched.
const sharedPrefix = "shared-"

// sharedName is the name in ingest/ of the blob d fetched from origin.
func sharedName(d digest.Digest, origin string) string {
	o := sha256.Sum256([]byte(origin))
	return sharedPrefix + d.Algorithm().String() + "-" + d.Encoded() + "-" + hex.EncodeToString(o[:16])
}

// fetch stages the blob d names. A blob the store holds, or that a
// concurrent pull (of any process) has fetched from the same origin, is
// linked and checked locally; otherwise open gives its bytes, fetched
// once while other pulls of it from origin wait on its lock. Pulls from
// other origins do not wait: one origin's pace is not another's.
func (in *ingest) fetch(ctx context.Context, d ocispec.Descriptor, origin string, open func() (io.ReadCloser, error)) (*staged, error) {
	name := d.Digest.String()
	if st, err := in.adopt(ctx, name, in.s.blobPath(d.Digest), d.Digest); st != nil || err != nil {
		return st, err
	}
	shared := filepath.Join(in.s.dir, ingestDir, sharedName(d.Digest, origin))
	release, err := lock(ctx, shared+".lock", false)
	if err != nil {
		return nil, err
	}
	in.locks = append(in.locks, shared+".lock")
	defer release()
	// The pull that held the lock may have committed it, or left it for
	// us.
	for _, p := range []string{in.s.blobPath(d.Digest), shared} {
		if st, err := in.adopt(ctx, name, p, d.Digest); st != nil || err != nil {
			return st, err
		}
	}
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	st, err := in.stage(ctx, name, rc, d.Digest.Algorithm(), d.Digest)
	if err != nil {
		if !errclass.Has(err) {
			// What the remote's reader made of its bytes.
			err = fmt.Errorf("blob %s: %v: %w", d.Digest, err, errdefs.ErrInvalidArgument)
		}
		return nil, err
	}
	// Shared until this import ends (close removes it): pulls waiting on
	// the lock take it from there.
	if err := os.Link(st.path, shared); err == nil {
		in.shared = append(in.shared, shared)
	}
	return st, nil
}

// adopt links the file at p (a blob the store or another pull verified)
// into the ingest directory and analyzes it as stage does. It returns
// nil, nil when there is no such file. The link keeps the bytes even if
// the store drops the blob meanwhile.
func (in *ingest) adopt(ctx context.Context, name, p string, want digest.Digest) (*staged, error) {
	in.n++
	dst := filepath.Join(in.dir, strconv.Itoa(in.n))
	if err := os.Link(p, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, errclass.OS(err)
	}
	// A link to what is not a file (a FIFO would block the open for
	// good, a symlink point anywhere) is no copy of a blob.
	fi, err := os.Lstat(dst)
	if err != nil || !fi.Mode().IsRegular() {
		os.Remove(dst)
		return nil, fmt.Errorf("blob %s: the local copy at %s is not a regular file: %w", want, p, errdefs.ErrDataLoss)
	}
	// The store's own copy, analyzed already when it was placed or
	// last adopted: not decompressed again (see knownLayers).
	own := p == in.s.blobPath(want)
	if own {
		if info, ok := in.s.known.lookup(want, fi, in.lim.layerLimits(in.left())); ok {
			in.account(info)
			return &staged{name: name, path: dst, info: info}, nil
		}
	}
	f, err := os.Open(dst)
	if err != nil {
		return nil, errclass.OS(err)
	}
	defer f.Close()
	lim := in.lim.layerLimits(in.left())
	info, err := in.analyze(ctx, name, f, io.Discard, want.Algorithm(), nil)
	if err != nil {
		return nil, err
	}
	if own && info.Digest == want {
		in.s.known.remember(fi, lim, info)
	}
	if info.Digest != want {
		// A blob of the store that rotted: the pull cannot commit
		// an image over it.
		os.Remove(dst)
		return nil, fmt.Errorf("blob %s: the local copy at %s has digest %s: %w", want, p, info.Digest, errdefs.ErrDataLoss)
	}
	in.account(info)
	return &staged{name: name, path: dst, info: info}, nil
}
