package image

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/unpack"
	"github.com/berthrun/berth/internal/errclass"
)

// An import unpacks the layers it reads as they stream in, in the same
// pass that writes and verifies them, so that the first Rootfs or Unpack
// of a new image need not read its layers again. The archive gives the
// layers in its own order (docker save sorts them by name), and which
// image uses which layer where is known only from the documents read
// last: so each layer is unpacked on its own into the ingest directory
// (unpacking), and once the images are resolved each new image's tree
// is put together from these by moving their files (tree, see
// unpack.Merge), a layer that cannot be merged being applied from its
// blob instead. The tree goes into the store beside the image, as
// KIND/.fresh-HEX/tree with the unpack's stats, where the first Rootfs
// (of the store's kind) or Unpack (of the same options) takes it by a
// rename. What the layers' content was is decided as before: by the
// blob, its digest and its analysis; a layer that fails to unpack on its
// own is only not unpacked ahead.

// freshPrefix names, in a tree kind's directory, the tree an import put
// together for an image.
const freshPrefix = ".fresh-"

// maxRecorded bounds the memory the records of an import's unpacked
// layers take (see unpack.Layer.Bytes); past it, layers are not kept.
const maxRecorded = 64 << 20

// unpacking unpacks one staged blob, should it be a layer, on its own into
// a directory of the ingest as it streams in.
type unpacking struct {
	in   *ingest
	dir  string
	lu   *unpack.LayerUnpacker
	kept bool // finish handed the layer out: its files stay for the merge
}

// unpacking returns how to unpack the blob about to be staged (want: its
// digest, if known), or nil when it is not to be: the import does not
// build trees, or the store has the blob already (and so, most likely,
// the image that uses it).
func (in *ingest) unpacking(want digest.Digest) *unpacking {
	if !in.trees {
		return nil
	}
	if want != "" {
		if _, err := os.Lstat(in.s.blobPath(want)); err == nil {
			return nil
		}
	}
	return &unpacking{in: in, dir: filepath.Join(in.dir, "x"+strconv.Itoa(in.n))}
}

// each is what the analyzer gives the entries to.
func (x *unpacking) each() layer.EachFunc {
	if x == nil {
		return nil
	}
	return x.entry
}

// entry unpacks the blob's next entry. The first failure ends the unpack
// of the blob (not its analysis, which judges it, and gives no entry
// after it).
func (x *unpacking) entry(h *tar.Header, r io.Reader) error {
	if x.lu == nil {
		if err := os.Mkdir(x.dir, 0o755); err != nil {
			return err
		}
		lu, err := unpack.NewLayer(x.dir, x.in.s.trees.opts.unpack())
		if err != nil {
			return err
		}
		x.lu = lu
	}
	if err := x.lu.Entry(h, r); err != nil {
		// Given up: its files go now, for the disk space the rest of
		// the import needs.
		x.close()
		return err
	}
	return nil
}

// finish ends the unpack of a blob that is a layer and returns it, or nil
// if it failed or the import keeps too much already.
func (x *unpacking) finish() *unpack.Layer {
	if x == nil || x.lu == nil {
		return nil
	}
	l, err := x.lu.Finish()
	x.lu = nil
	if err != nil {
		return nil
	}
	if x.in.recorded += l.Bytes(); x.in.recorded > maxRecorded {
		return nil
	}
	x.kept = true
	return l
}

// close ends an unpack whose layer was not handed out (it failed, was
// not a layer, or was one too many to keep): its files go.
func (x *unpacking) close() {
	if x == nil || x.kept {
		return
	}
	if x.lu != nil {
		x.lu.Close()
		x.lu = nil
	}
	os.RemoveAll(x.dir)
}

// kindOf is the kind of tree an unpack with opts gives, if a store keeps
// that kind.
func kindOf(opts UnpackOptions) (treeKind, bool) {
	for _, k := range treeKinds {
		if k.opts == opts {
			return k, true
		}
	}
	return treeKind{}, false
}

// buildTrees puts together the trees of the new images among ps, for those
// whose layers were mostly unpacked as they streamed in. A tree that
// cannot be made is not made: the import goes on without it.
func (s *Store) buildTrees(ctx context.Context, in *ingest, ps []*pending) error {
	if !in.trees {
		return nil
	}
	idx, err := s.readIndexShared()
	if err != nil {
		return nil
	}
	for _, p := range ps {
		if _, ok := idx.Images[p.digest]; ok {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.dir, s.trees.dir, p.digest.Encoded())); err == nil {
			continue
		}
		if err := in.tree(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// tree puts together p's tree, of the store's kind, in the ingest
// directory (p.tree), when layers unpacked as they streamed in hold at
// least half of its bytes: merged where they can be, the others applied
// from their blobs. It fails only when ctx is done.
func (in *ingest) tree(ctx context.Context, p *pending) error {
	var total, ahead int64
	for _, l := range p.layers {
		total += l.info.UncompressedSize
		if l.layer != nil {
			ahead += l.info.UncompressedSize
		}
	}
	if ahead == 0 || ahead*2 < total {
		return nil
	}
	in.n++
	wrap := filepath.Join(in.dir, "fresh-"+strconv.Itoa(in.n))
	tree := filepath.Join(wrap, "tree")
	if os.Mkdir(wrap, 0o700) != nil || os.Mkdir(tree, 0o755) != nil {
		return nil
	}
	u, err := unpack.New(tree, in.s.trees.opts.unpack())
	if err != nil {
		return nil
	}
	for _, l := range p.layers {
		if l.layer != nil {
			err := u.Merge(ctx, l.layer)
			if err == nil || !errors.Is(err, unpack.ErrMergeConflict) {
				l.layer = nil // consumed, or half
			}
			if err == nil {
				continue
			}
			if !errors.Is(err, unpack.ErrMergeConflict) {
				u.Close()
				return ctx.Err()
			}
		}
		if err := applyBlob(ctx, u, l.path); err != nil {
			u.Close()
			return ctx.Err()
		}
	}
	if err := u.Close(); err != nil {
		return nil
	}
	b, err := json.Marshal(u.Stats())
	if err != nil || os.WriteFile(filepath.Join(wrap, "stats.json"), b, 0o600) != nil {
		return nil
	}
	p.tree = wrap
	return nil
}

// applyBlob applies the staged layer blob at path with u.
func applyBlob(ctx context.Context, u *unpack.Unpacker, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, _, err := layer.Decompress(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return err
	}
	defer rc.Close()
	return u.Apply(ctx, rc)
}

// placeFresh puts p's tree in the store, unless the image has a tree of
// the store's kind already. The caller holds the store lock, and records
// the image.
func (s *Store) placeFresh(p *pending) {
	if p.tree == "" {
		return
	}
	k := s.trees
	if _, err := os.Lstat(filepath.Join(s.dir, k.dir, p.digest.Encoded())); err == nil {
		return
	}
	_ = os.Rename(p.tree, filepath.Join(s.dir, k.dir, freshPrefix+p.digest.Encoded()))
}

// takeFresh moves the tree an import put together for image d, of kind
// k, to dst (which must not exist, its parent must), and returns its
// stats; ok is false when there is no such tree, or it cannot be moved
// there (another filesystem). The caller holds the lock of d's trees of
// kind k.
func (s *Store) takeFresh(d digest.Digest, k treeKind, dst string) (st unpack.Stats, ok bool, err error) {
	wrap := filepath.Join(s.dir, k.dir, freshPrefix+d.Encoded())
	b, err := os.ReadFile(filepath.Join(wrap, "stats.json"))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return st, false, nil
	}
	moved, err := renameNoReplace(filepath.Join(wrap, "tree"), dst)
	if err != nil {
		return st, false, errclass.OS(err)
	}
	if !moved {
		return st, false, nil
	}
	os.RemoveAll(wrap)
	return st, true, nil
}

// takeFreshFor is takeFresh for an unpack with opts, taking the lock of
// the image's trees of that kind when there is a tree to take.
func (s *Store) takeFreshFor(ctx context.Context, d digest.Digest, opts UnpackOptions, dst string) (unpack.Stats, bool, error) {
	k, ok := kindOf(opts)
	if !ok {
		return unpack.Stats{}, false, nil
	}
	if _, err := os.Lstat(filepath.Join(s.dir, k.dir, freshPrefix+d.Encoded(), "tree")); err != nil {
		return unpack.Stats{}, false, nil
	}
	release, err := lock(ctx, filepath.Join(s.dir, k.dir, d.Encoded()+".lock"), false)
	if err != nil {
		return unpack.Stats{}, false, err
	}
	defer release()
	return s.takeFresh(d, k, dst)
}

// freshImage returns the image digest (hex) a name of a tree kind's
// directory holds the fresh tree of.
func freshImage(name string) (string, bool) {
	return strings.CutPrefix(name, freshPrefix)
}
