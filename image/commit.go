package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/ocilayout"
)

// CommitOptions describe the image Commit makes.
type CommitOptions struct {
	// Config is what containers of the image run.
	Config ocispec.ImageConfig
	// Tags says which tag the image gets (usually Name).
	Tags TagPolicy
	// Limits bound the layer as they bound any import.
	Limits Limits
}

// Commit makes a one-layer image of layer (an uncompressed tar of a root
// filesystem, such as a container's snapshot) and imports it into the store
// through the same checks as any archive: limits, digests, tag policy. The
// layer is spooled once to a temporary file to learn its digest.
func (s *Store) Commit(ctx context.Context, layer io.Reader, opts CommitOptions) (*ImportResult, error) {
	// A locked ingest directory: if this process dies, the next Open
	// removes it like any interrupted import.
	in, err := s.newIngest(opts.Limits, false)
	if err != nil {
		return nil, err
	}
	defer in.close()
	tmp, err := os.Create(filepath.Join(in.dir, "layer.tar"))
	if err != nil {
		return nil, err
	}
	defer tmp.Close()
	dg := digest.Canonical.Digester()
	size, err := io.Copy(io.MultiWriter(tmp, dg.Hash()), layer)
	if err != nil {
		return nil, fmt.Errorf("commit: read layer: %w", err)
	}
	entries, err := commitEntries(opts.Config, dg.Digest(), tmp, size)
	if err != nil {
		return nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeArchive(pw, entries))
	}()
	res, err := s.ImportReader(ctx, pr, ImportOptions{Limits: opts.Limits, Tags: opts.Tags})
	pr.Close()
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if len(res.Images) != 1 {
		return nil, fmt.Errorf("commit made %d images: %w", len(res.Images), errdefs.ErrInternal)
	}
	return res, nil
}

// archiveEntry is a regular file of the archive Commit imports.
type archiveEntry struct {
	name string
	size int64
	r    io.Reader
}

// commitEntries returns the files of a docker-save archive of one image:
// its config (config, with the layer of diffID), the layer (size bytes
// read from layer) and the manifest.
func commitEntries(config ocispec.ImageConfig, diffID digest.Digest, layer io.Reader, size int64) ([]archiveEntry, error) {
	now := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &now,
		Platform: ocilayout.HostPlatform(),
		Config:   config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History:  []ocispec.History{{Created: &now, CreatedBy: "berth commit"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgName := digest.FromBytes(cfgJSON).Encoded() + ".json"
	layerName := diffID.Encoded() + "/layer.tar"
	manifest, err := dockersave.MarshalManifest([]dockersave.ManifestEntry{{Config: cfgName, Layers: []string{layerName}}})
	if err != nil {
		return nil, err
	}
	return []archiveEntry{
		{cfgName, int64(len(cfgJSON)), bytes.NewReader(cfgJSON)},
		{layerName, size, layer},
		{dockersave.ManifestFile, int64(len(manifest)), bytes.NewReader(manifest)},
	}, nil
}

// writeArchive writes entries to w as a tar archive.
func writeArchive(w io.Writer, entries []archiveEntry) error {
	tw := tar.NewWriter(w)
	for _, f := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: f.size, Typeflag: tar.TypeReg, ModTime: exportTime}); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, f.r, f.size); err != nil {
			return err
		}
	}
	return tw.Close()
}
