package image

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/opencontainers/go-digest"
)

// commit moves the images' blobs into the store and records the images
// and tags, all under the store lock; a failure leaves the store as it
// was.
func (s *Store) commit(ctx context.Context, in *ingest, ps []*pending, pol TagPolicy) (*ImportResult, error) {
	wants, skipped, err := pol.plan(ps)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{}
	err = s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		changes, err := pol.apply(idx, wants)
		if err != nil {
			return err
		}
		if err := s.place(in, idx, ps, res); err != nil {
			if idx, rerr := s.readIndex(); rerr == nil {
				_ = s.collect(idx)
			}
			return err
		}
		if err := s.writeIndex(idx); err != nil {
			if idx, rerr := s.readIndex(); rerr == nil {
				_ = s.collect(idx)
			}
			return err
		}
		res.Tags = append(changes, skipped...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.warm(res)
	return res, nil
}

// warm parses the new index and the committed images' documents now, for
// the Get that follows a pull (the kubelet's ImageStatus) to find them
// parsed (see readIndexShared, knownDocs).
func (s *Store) warm(res *ImportResult) {
	idx, err := s.readIndexShared()
	if err != nil {
		return
	}
	for _, im := range res.Images {
		_, _ = s.load(idx, im.Digest)
	}
}

// place puts the blobs of new images in blobs/ and records the images.
func (s *Store) place(in *ingest, idx *index, ps []*pending, res *ImportResult) error {
	now := time.Now().UTC()
	var dirs []string
	for _, p := range ps {
		im := ImportedImage{Digest: p.digest, Config: p.config.info.Digest, ArchiveTags: p.tags}
		if _, ok := idx.Images[p.digest]; ok {
			im.Existed = true
			res.Images = append(res.Images, im)
			continue
		}
		rec := &imageInfo{Config: p.config.info.Digest, Imported: now, Size: int64(len(p.manifest)) + p.config.info.Size}
		blobs := append([]*staged{p.config}, p.layers...)
		for _, b := range blobs {
			placed, err := s.placeBlob(b.info.Digest, b.path, &dirs)
			if err != nil {
				return err
			}
			if fi, err := os.Lstat(s.blobPath(b.info.Digest)); placed && err == nil {
				s.known.remember(fi, in.lim.layerLimits(0), b.info)
			}
		}
		rec.Blobs = append(rec.Blobs, p.config.info.Digest)
		for _, l := range p.layers {
			rec.Blobs = append(rec.Blobs, l.info.Digest)
			rec.Size += l.info.Size
		}
		mpath := ""
		if p.manifestSt != nil {
			mpath = p.manifestSt.path
		} else {
			mpath = filepath.Join(in.dir, "manifest-"+p.digest.Encoded())
			if err := os.WriteFile(mpath, p.manifest, 0o600); err != nil {
				return errclass.OS(err)
			}
		}
		if _, err := s.placeBlob(p.digest, mpath, &dirs); err != nil {
			return err
		}
		s.placeFresh(p)
		idx.Images[p.digest] = rec
		res.Images = append(res.Images, im)
	}
	if s.fsync {
		for _, d := range dirs {
			if err := syncDir(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// placeBlob renames a staged file into blobs/ unless the blob is there,
// and says whether it did.
func (s *Store) placeBlob(d digest.Digest, staged string, dirs *[]string) (bool, error) {
	dst := s.blobPath(d)
	if _, err := os.Lstat(dst); err == nil {
		return false, nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, errclass.OS(err)
	}
	if err := os.Chmod(staged, 0o444); err != nil {
		return false, errclass.OS(err)
	}
	if err := os.Rename(staged, dst); err != nil {
		return false, errclass.OS(err)
	}
	if !contains(*dirs, dir) {
		*dirs = append(*dirs, dir)
	}
	return true, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return errclass.OS(err)
	}
	defer f.Close()
	return errclass.OS(f.Sync())
}
