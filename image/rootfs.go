package image

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/unpack"
	"github.com/berthrun/berth/internal/errclass"
)

// UnpackOptions relax Unpack's defaults.
type UnpackOptions struct {
	// AllowDevices creates the device nodes layers hold; by default they
	// are dropped.
	AllowDevices bool
	// AllowSetid keeps setuid/setgid bits and file capabilities; by
	// default they are cleared.
	AllowSetid bool
}

// unpack are the unpacker's options for opts.
func (opts UnpackOptions) unpack() unpack.Options {
	return unpack.Options{AllowDevices: opts.AllowDevices, AllowSetid: opts.AllowSetid}
}

// UnpackResult says what an unpack did and dropped.
type UnpackResult struct {
	unpack.Stats
}

// Unpack applies the layers of the image ref names, in order, into dir,
// which must not exist (its parent must). No entry can write outside dir
// (see package unpack). Each blob's digest and each layer's diff ID is
// verified again as it streams (data-loss when the store's copy rotted).
// On failure dir is removed.
//
// When the import put the image's tree together already with these
// options (see ImportOptions.NoRootfs) and dir is on the store's
// filesystem, the first Unpack or Rootfs takes that tree instead, by a
// rename: it was unpacked from the same verified bytes when they were
// imported.
func (s *Store) Unpack(ctx context.Context, ref, dir string, opts UnpackOptions) (*UnpackResult, error) {
	im, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if st, ok, err := s.takeFreshFor(ctx, im.Digest, opts, dir); err != nil || ok {
		if err != nil {
			return nil, fmt.Errorf("unpack %q into %q: %w", ref, dir, err)
		}
		return &UnpackResult{Stats: st}, nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("unpack %q into %q: %w", ref, dir, errclass.OS(err))
	}
	res, err := s.unpackInto(ctx, im, dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("unpack %q into %q: %w", ref, dir, err)
	}
	return res, nil
}

// unpackInto applies im's layers to the existing directory dir. Reading,
// verifying and decompressing a layer runs beside writing its files.
func (s *Store) unpackInto(ctx context.Context, im *Image, dir string, opts UnpackOptions) (*UnpackResult, error) {
	// The import enforced the limits it was given; the unpacker checks
	// every name and type again, whatever they were.
	u, err := unpack.New(dir, opts.unpack())
	if err != nil {
		return nil, err
	}
	defer u.Close()
	var blobs []*verifiedReader
	err = s.shared(ctx, func() error {
		for _, l := range im.manifest.Layers {
			vr, err := s.openVerified(l.Digest, l.Size)
			if err != nil {
				return err
			}
			blobs = append(blobs, vr)
		}
		return nil
	})
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	diffIDs := im.config.RootFS.DiffIDs
	if len(diffIDs) != len(blobs) {
		return nil, fmt.Errorf("stored config names %d diff IDs for %d layers: %w", len(diffIDs), len(blobs), errdefs.ErrDataLoss)
	}
	for i, b := range blobs {
		if err := s.applyLayer(ctx, u, b, diffIDs[i]); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, b.d, err)
		}
	}
	if err := u.Close(); err != nil {
		return nil, err
	}
	return &UnpackResult{Stats: u.Stats()}, nil
}

// applyLayer streams one verified blob, decompressed, into u.
func (s *Store) applyLayer(ctx context.Context, u *unpack.Unpacker, b *verifiedReader, diffID digest.Digest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cp := newChunkPipe()
	done := make(chan error, 1)
	go func() {
		err := produce(ctx, cp, b, diffID)
		cp.closeWrite(err)
		done <- err
	}()
	applyErr := u.Apply(ctx, cp)
	if applyErr != nil {
		cancel()
	}
	cp.closeRead()
	prodErr := <-done
	cp.recycle()
	// A rotten blob may also make a bad tar: the rot is the cause.
	if prodErr != nil && (applyErr == nil || errdefs.IsDataLoss(prodErr)) {
		return prodErr
	}
	return applyErr
}

// produce reads the blob to its end (verifying it), decompresses it and
// checks its diff ID, handing chunks to the unpacker while it reads. An
// uncompressed layer's diff ID is its blob digest, verified once.
func produce(ctx context.Context, cp *chunkPipe, b *verifiedReader, diffID digest.Digest) error {
	rc, comp, err := layer.Decompress(b)
	if err != nil {
		return err
	}
	defer rc.Close()
	var h digest.Digester
	if comp != layer.None {
		h = digest.SHA256.Digester()
	} else if b.d != diffID {
		return fmt.Errorf("uncompressed layer %s is not its diff ID %s: %w", b.d, diffID, errdefs.ErrDataLoss)
	}
	var spare []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf, ok := cp.get()
		if !ok {
			// The unpacker is done (the tar's end): the rest is still
			// read, the digests cover it.
			if spare == nil {
				spare = make([]byte, chunkSize)
			}
			buf = spare
		}
		n, err := io.ReadFull(rc, buf)
		if h != nil {
			h.Hash().Write(buf[:n])
		}
		if ok {
			cp.put(buf[:n])
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			if errdefs.IsDataLoss(err) {
				return err
			}
			return fmt.Errorf("stored layer: %v: %w", err, errdefs.ErrDataLoss)
		}
	}
	// Whatever follows the compressed stream must still be read for the
	// blob's digest.
	if _, err := io.Copy(io.Discard, b); err != nil {
		return err
	}
	if h != nil && h.Digest() != diffID {
		return fmt.Errorf("stored layer decompresses to %s, not its diff ID %s: %w", h.Digest(), diffID, errdefs.ErrDataLoss)
	}
	return nil
}

// UnpackExt4 unpacks the image ref names into a new ext4 image file of
// size bytes (0: sized to fit, with room to spare) built by mkfs.ext4 -d,
// so that nothing from the image is ever mounted on the host to build it.
// file must not exist; on failure it is removed.
func (s *Store) UnpackExt4(ctx context.Context, ref, file string, size int64, opts UnpackOptions) (*UnpackResult, error) {
	fail := func(err error) (*UnpackResult, error) {
		return nil, fmt.Errorf("unpack %q into ext4 image %q: %w", ref, file, err)
	}
	if size < 0 {
		return fail(fmt.Errorf("negative size %d: %w", size, errdefs.ErrInvalidArgument))
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fail(fmt.Errorf("mkfs.ext4 (e2fsprogs) is not installed: %w", errdefs.ErrNotImplemented))
	}
	im, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	in, err := s.newIngest(DefaultLimits, false)
	if err != nil {
		return fail(err)
	}
	defer in.close()
	tree := filepath.Join(in.dir, "tree")
	res := &UnpackResult{}
	st, ok, err := s.takeFreshFor(ctx, im.Digest, opts, tree)
	if err != nil {
		return fail(err)
	}
	if ok {
		res.Stats = st
	} else {
		if err := os.Mkdir(tree, 0o755); err != nil {
			return fail(errclass.OS(err))
		}
		if res, err = s.unpackInto(ctx, im, tree, opts); err != nil {
			return fail(err)
		}
	}
	if size == 0 {
		if size, err = ext4Size(tree); err != nil {
			return fail(err)
		}
	}
	if err := makeExt4(ctx, mkfs, tree, file, size); err != nil {
		return fail(err)
	}
	return res, nil
}

// ext4Size is the size of an ext4 image to hold tree: room for metadata
// (an inode per 16 KiB, journal) and a spare 25%, in whole MiB.
func ext4Size(tree string) (int64, error) {
	used, inodes, err := treeUsage(tree)
	if err != nil {
		return 0, err
	}
	size := (used+inodes*256)*5/4 + 64<<20
	return (size + 1<<20 - 1) &^ (1<<20 - 1), nil
}

// makeExt4 makes file, size bytes, an ext4 image of tree with mkfs; the
// file is removed if that fails.
func makeExt4(ctx context.Context, mkfs, tree, file string, size int64) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return errclass.OS(err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(file)
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return errclass.OS(err)
	}
	if err := f.Close(); err != nil {
		return errclass.OS(err)
	}
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-d", tree, "-E", "root_owner=0:0", file)
	if out, err := cmd.CombinedOutput(); err != nil {
		var cls error = errdefs.ErrUnknown
		if strings.Contains(string(out), "Could not allocate") || strings.Contains(string(out), "No space") {
			cls = errdefs.ErrResourceExhausted
		}
		return fmt.Errorf("mkfs.ext4: %v: %s: %w", err, strings.TrimSpace(string(out)), cls)
	}
	ok = true
	return nil
}

// treeUsage sums the disk blocks and inodes of a tree.
func treeUsage(dir string) (int64, int64, error) {
	var used, inodes int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		inodes++
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used += st.Blocks * 512
		}
		return nil
	})
	return used, inodes, errclass.OS(err)
}

// treeKind is a kind of tree Rootfs keeps: the options it is unpacked
// with, the directory such trees go in, and the suffix of a hold on one
// in store.json's holders. A store gives trees of its own kind only;
// holds, collection and the cleanup in Open handle every kind. Each kind
// has a directory of its own, beside rootfs/ rather than in it, so that
// a store of an earlier version, which knows rootfs/ alone, neither gives
// nor collects another kind's trees.
type treeKind struct {
	dir    string
	suffix string
	opts   UnpackOptions
}

var (
	defaultTrees = treeKind{dir: rootfsDir}
	setidTrees   = treeKind{dir: setidDir, suffix: "/setid", opts: UnpackOptions{AllowSetid: true}}
	treeKinds    = []treeKind{defaultTrees, setidTrees}
)

// setid says what trees of the kind do with setuid bits, for errors.
func (k treeKind) setid() string {
	if k.opts.AllowSetid {
		return "kept"
	}
	return "cleared"
}

// holdKey is the key of holder's hold on a tree of kind k in store.json.
func (k treeKind) holdKey(holder string) string { return holder + k.suffix }

// kindOfHold is the kind of tree a key of store.json's holders holds (the
// zero treeKind for a key of no known kind).
func kindOfHold(key string) treeKind {
	for _, k := range treeKinds {
		if k.suffix != "" && strings.HasSuffix(key, k.suffix) {
			return k
		}
	}
	if strings.Contains(key, "/") {
		return treeKind{}
	}
	return defaultTrees
}

// RootfsOptions tune Rootfs.
type RootfsOptions struct {
	// Holder names who uses the tree (a container ID): the tree is then
	// kept, even after the image is removed, until ReleaseRootfs(Holder).
	// Without a holder the tree lives as long as the image.
	Holder string
}

// Rootfs returns the unpacked root filesystem of the image ref names,
// unpacking it the first time (once, even when several goroutines or
// processes ask at once) under the store's rootfs/ directory, with the
// default UnpackOptions: setuid/setgid bits and file capabilities
// cleared. A store opened WithSetidRootfs gives a tree that keeps them,
// kept apart under rootfs-setid/. The tree is shared: callers use it
// read-only, for example as an overlay's lower directory under a
// per-container upper one. The first time, the tree the import put
// together is taken if there is one of this kind (see
// ImportOptions.NoRootfs), by a rename.
//
// Garbage collection: a tree goes when its image is removed and no holder
// holds it any more: Remove deletes it when nobody holds it, and
// ReleaseRootfs of its last holder deletes it when its image is gone. A
// holder holds one tree: asking for the other kind's is refused
// (failed-precondition) until it is released.
func (s *Store) Rootfs(ctx context.Context, ref string, opts RootfsOptions) (string, error) {
	if opts.Holder != "" && !validHolder(opts.Holder) {
		return "", fmt.Errorf("rootfs holder %q: want 1 to 128 characters of [a-zA-Z0-9_.-]: %w", opts.Holder, errdefs.ErrInvalidArgument)
	}
	d, err := s.holdRef(ctx, ref, opts.Holder)
	if err != nil {
		return "", err
	}
	k := s.trees
	dir := filepath.Join(s.dir, k.dir, d.Encoded())
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	release, err := lock(ctx, filepath.Join(s.dir, k.dir, d.Encoded()+".lock"), false)
	if err != nil {
		return "", s.dropHolder(opts.Holder, err)
	}
	defer release()
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if _, ok, err := s.takeFresh(d, k, dir); err != nil || ok {
		if err != nil {
			return "", s.dropHolder(opts.Holder, fmt.Errorf("rootfs of %q: %w", ref, err))
		}
		return dir, nil
	}
	if err := s.unpackRootfs(ctx, ref, d, k, dir); err != nil {
		return "", s.dropHolder(opts.Holder, err)
	}
	return dir, nil
}

// holdRef resolves ref and, when holder is set, records that holder holds
// the image's tree of the store's kind (refused if it holds another tree).
func (s *Store) holdRef(ctx context.Context, ref, holder string) (digest.Digest, error) {
	var d digest.Digest
	err := s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		if d, err = resolveRef(idx, ref); err != nil {
			return err
		}
		if holder == "" {
			return nil
		}
		for _, k := range treeKinds {
			cur, ok := idx.Holders[k.holdKey(holder)]
			switch {
			case !ok:
			case cur != d:
				return fmt.Errorf("rootfs holder %q already holds image %s (release it first): %w", holder, cur, errdefs.ErrFailedPrecondition)
			case k != s.trees:
				return fmt.Errorf("rootfs holder %q already holds a tree of image %s with setuid bits and file capabilities %s, where this store's are %s (release it first): %w", holder, cur, k.setid(), s.trees.setid(), errdefs.ErrFailedPrecondition)
			default:
				return nil
			}
		}
		idx.Holders[s.trees.holdKey(holder)] = d
		return s.writeIndex(idx)
	})
	return d, err
}

// unpackRootfs unpacks image d (named ref) as a tree of kind k into a
// temporary directory and renames it to dir; the caller holds dir's lock.
func (s *Store) unpackRootfs(ctx context.Context, ref string, d digest.Digest, k treeKind, dir string) error {
	tmp := filepath.Join(s.dir, k.dir, ".tmp-"+d.Encoded()+"-"+randomID())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return errclass.OS(err)
	}
	idx, err := s.readIndex()
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	im, err := s.load(idx, d)
	if err == nil {
		_, err = s.unpackInto(ctx, im, tmp, k.opts)
	}
	if err == nil {
		err = errclass.OS(os.Rename(tmp, dir))
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("rootfs of %q: %w", ref, err)
	}
	return nil
}

// dropHolder undoes a Rootfs' hold after a failure, and returns err.
func (s *Store) dropHolder(holder string, err error) error {
	if holder != "" {
		_ = s.ReleaseRootfs(context.Background(), holder)
	}
	return err
}

// ReleaseRootfs ends each holder's use of a root filesystem, of whichever
// kind (a store opened WithSetidRootfs or not releases both), and deletes
// a tree if its image is gone and nobody else holds it; several holders
// are released at once, under one lock of the store. Releasing an
// unknown holder, or a name no holder can have, does nothing.
func (s *Store) ReleaseRootfs(ctx context.Context, holders ...string) error {
	holders = slices.DeleteFunc(slices.Clone(holders), func(h string) bool { return !validHolder(h) })
	if len(holders) == 0 {
		return nil
	}
	return s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		held := false
		for _, holder := range holders {
			for _, k := range treeKinds {
				if _, ok := idx.Holders[k.holdKey(holder)]; ok {
					delete(idx.Holders, k.holdKey(holder))
					held = true
				}
			}
		}
		if !held {
			return nil
		}
		if err := s.writeIndex(idx); err != nil {
			return err
		}
		return s.collect(idx)
	})
}

func validHolder(h string) bool {
	if len(h) == 0 || len(h) > 128 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
