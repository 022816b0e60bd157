package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/ocilayout"
	"github.com/berthrun/berth/internal/errclass"
)

// ImportOptions tune an import.
type ImportOptions struct {
	// Limits bound what the import reads; zero fields take DefaultLimits.
	Limits Limits
	// Tags says which tags the import may create; the zero value creates
	// none.
	Tags TagPolicy
	// Platform chooses among the manifests of a multi-platform image
	// (default: this host's). Images listed on their own are imported
	// whatever their platform, unless their descriptor names another.
	Platform *ocispec.Platform
	// Progress, when set, is called from the importing goroutine as the
	// archive is read, at most every 100 ms, and once at the end.
	Progress func(ImportProgress)
	// Verify, when set, is called once the whole input has been read and
	// before anything is committed; an error aborts the import. Glance
	// pulls use it to check the image's checksum.
	Verify func() error
	// NoRootfs makes the import store the images only. By default (on
	// Linux) it also unpacks their layers as they stream in, in the same
	// pass, and puts together each new image's root filesystem, of the
	// store's kind (see Rootfs), for the image's first Rootfs, or Unpack
	// with the matching options, to take instead of unpacking: the tree
	// takes the disk space of the unpacked image until then.
	NoRootfs bool
}

// ImportProgress tells how far an import has read.
type ImportProgress struct {
	Read  int64 // bytes of the archive read so far
	Total int64 // its size, or 0 when unknown (a stream)
}

// ImportResult says what an import did.
type ImportResult struct {
	// Images are the images of the archive, now in the store.
	Images []ImportedImage
	// Tags lists every tag the archive claimed or the policy named, and
	// what became of it.
	Tags []TagChange
	// Read is the number of bytes read from the archive.
	Read int64
}

// ImportedImage is one image an import put in the store.
type ImportedImage struct {
	Digest digest.Digest // the manifest's digest: the image's identity
	Config digest.Digest // the config's digest (docker's image ID)
	// ArchiveTags are the tags the archive claimed for it, normalized.
	ArchiveTags []string
	// Existed is true when the store already had the image.
	Existed bool
}

// Import imports the docker-save archive or OCI image layout (a tar,
// possibly gzip- or zstd-compressed, or a directory) at src.
//
// Nothing from the archive is trusted: every blob's digest and every
// layer's diff ID is verified, JSON documents are size-capped, paths
// must stay inside the archive, layers are checked entry by entry, and
// opts.Limits stop the read as soon as one is exceeded. The store changes
// only when everything checked out, in one atomic step.
//
// Errors: invalid-argument for a malformed or hostile archive (including
// a digest that does not match its content), resource-exhausted for a
// limit, already-exists for a tag that would move without AllowRetag,
// not-found when src does not exist.
func (s *Store) Import(ctx context.Context, src string, opts ImportOptions) (*ImportResult, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("archive %q: %w", src, errclass.OS(err))
	}
	var res *ImportResult
	if fi.IsDir() {
		res, err = s.importDir(ctx, src, opts)
	} else {
		var f *os.File
		if f, err = os.Open(src); err != nil {
			return nil, fmt.Errorf("archive %q: %w", src, errclass.OS(err))
		}
		defer f.Close()
		res, err = s.importReader(ctx, f, fi.Size(), opts)
	}
	if err != nil {
		return nil, fmt.Errorf("archive %q: %w", src, err)
	}
	return res, nil
}

// ImportReader imports an archive (a tar, possibly compressed) from r, as
// Import does.
func (s *Store) ImportReader(ctx context.Context, r io.Reader, opts ImportOptions) (*ImportResult, error) {
	res, err := s.importReader(ctx, r, 0, opts)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return res, nil
}

func (s *Store) importReader(ctx context.Context, r io.Reader, total int64, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Tags.check(); err != nil {
		return nil, err
	}
	lim := opts.Limits.resolved()
	in, err := s.newIngest(lim, !opts.NoRootfs)
	if err != nil {
		return nil, err
	}
	defer in.close()
	cr := &countReader{r: r, max: lim.MaxArchiveBytes, total: total, progress: opts.Progress}
	br := bufio.NewReaderSize(cr, 64<<10)
	stream := io.Reader(br)
	comp, err := layer.Detect(br)
	if err != nil {
		return nil, err
	}
	if comp != layer.None {
		dr, _, err := layer.Decompress(br)
		if err != nil {
			return nil, err
		}
		defer dr.Close()
		// Decompressed beside the hashing and the writing of the
		// blobs, progress reported from here.
		cr.aside = true
		ra := layer.NewReadahead(&ratioReader{r: dr, raw: cr, max: lim.MaxArchiveBytes, ratio: lim.MaxRatio})
		defer ra.Close()
		stream = &reportReader{r: ra, c: cr}
	}
	src := &tarSource{in: in, files: map[string]*staged{}, links: map[string]string{}, docs: map[string][]byte{}}
	if err := src.read(ctx, stream, lim); err != nil {
		return nil, err
	}
	// The whole input is read, padding included, before Verify looks at
	// what went through.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return nil, readErr(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, readErr(err)
	}
	cr.report(true)
	if opts.Verify != nil {
		if err := opts.Verify(); err != nil {
			return nil, err
		}
	}
	return s.finish(ctx, in, src, opts, cr.n.Load())
}

func (s *Store) importDir(ctx context.Context, dir string, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Tags.check(); err != nil {
		return nil, err
	}
	lim := opts.Limits.resolved()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errclass.OS(err)
	}
	defer unix.Close(fd)
	in, err := s.newIngest(lim, !opts.NoRootfs)
	if err != nil {
		return nil, err
	}
	defer in.close()
	src := &dirSource{in: in, root: fd, staged: map[string]*staged{}, count: &countReader{max: lim.MaxArchiveBytes, progress: opts.Progress}}
	if opts.Verify != nil {
		return nil, fmt.Errorf("Verify is for archives read as a stream: %w", errdefs.ErrInvalidArgument)
	}
	return s.finish(ctx, in, src, opts, 0)
}

func readErr(err error) error {
	if errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err) || errdefs.IsCanceled(err) {
		return err
	}
	return fmt.Errorf("archive: %v: %w", err, errdefs.ErrInvalidArgument)
}

// finish resolves the archive's images and commits them.
func (s *Store) finish(ctx context.Context, in *ingest, src source, opts ImportOptions, read int64) (*ImportResult, error) {
	platform := ocilayout.HostPlatform()
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	r := &resolver{src: src, in: in, lim: in.lim, platform: platform, seen: map[digest.Digest]*pending{}}
	ps, err := r.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.buildTrees(ctx, in, ps); err != nil {
		return nil, err
	}
	res, err := s.commit(ctx, in, ps, opts.Tags)
	if err != nil {
		return nil, err
	}
	if ds, ok := src.(*dirSource); ok {
		read = ds.count.n.Load()
	}
	res.Read = read
	return res, nil
}
