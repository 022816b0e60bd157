package dockersave

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// ManifestFile is the archive's table of contents.
const ManifestFile = "manifest.json"

// ManifestEntry is one image of manifest.json.
type ManifestEntry struct {
	// Config is the archive path of the image's config.
	Config string
	// RepoTags are the image's tags as the archive claims them.
	RepoTags []string
	// Layers are the archive paths of the layers, lowest first.
	Layers []string
	// Parent is the legacy parent image ID; it is ignored.
	Parent string `json:",omitempty"`
	// LayerSources describe foreign layers; berth refuses them.
	LayerSources map[string]json.RawMessage `json:",omitempty"`
}

// MaxImages bounds the entries of one manifest.json.
const MaxImages = 1024

// ParseManifest parses manifest.json and checks every path it names with
// CleanPath. Errors are invalid-argument.
func ParseManifest(b []byte) ([]ManifestEntry, error) {
	var entries []ManifestEntry
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", ManifestFile, err, errdefs.ErrInvalidArgument)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no image: %w", ManifestFile, errdefs.ErrInvalidArgument)
	}
	if len(entries) > MaxImages {
		return nil, fmt.Errorf("%s: more than %d images: %w", ManifestFile, MaxImages, errdefs.ErrResourceExhausted)
	}
	for i := range entries {
		e := &entries[i]
		if len(e.LayerSources) > 0 {
			return nil, fmt.Errorf("%s: image %d has foreign layers (LayerSources): %w", ManifestFile, i, errdefs.ErrInvalidArgument)
		}
		var err error
		if e.Config, err = CleanPath(e.Config); err != nil {
			return nil, fmt.Errorf("%s: image %d config: %w", ManifestFile, i, err)
		}
		for j, l := range e.Layers {
			if e.Layers[j], err = CleanPath(l); err != nil {
				return nil, fmt.Errorf("%s: image %d layer %d: %w", ManifestFile, i, j, err)
			}
		}
	}
	return entries, nil
}

// CleanPath returns p, a path inside an archive, cleaned. An empty or
// absolute path, one with a ".." element or a NUL byte is refused
// (invalid-argument): it would name something outside the archive.
func CleanPath(p string) (string, error) {
	if p == "" || strings.IndexByte(p, 0) >= 0 || strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("archive path %q: not a relative path: %w", p, errdefs.ErrInvalidArgument)
	}
	for el := range strings.SplitSeq(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("archive path %q: points outside the archive: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return "", fmt.Errorf("archive path %q: names the archive itself: %w", p, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// MarshalManifest writes manifest.json for entries.
func MarshalManifest(entries []ManifestEntry) ([]byte, error) {
	for i := range entries {
		if entries[i].RepoTags == nil {
			entries[i].RepoTags = []string{}
		}
	}
	return json.Marshal(entries)
}
