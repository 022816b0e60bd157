package layer

import (
	"archive/tar"
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// Limits bound one layer. A zero or negative field is no bound.
type Limits struct {
	MaxEntries    int   // entries in the layer
	MaxPathLength int   // bytes of an entry's name or hardlink target
	MaxPathDepth  int   // elements of an entry's name
	MaxSize       int64 // bytes of the uncompressed tar stream
	// MaxRatio bounds uncompressed bytes per compressed byte, checked
	// once the output passes RatioGrace.
	MaxRatio int64
}

// RatioGrace is the output below which the decompression ratio is not
// checked: a tiny layer of empty files compresses very well.
const RatioGrace = 1 << 20

// Whiteout names, as the OCI image spec defines them.
const (
	WhiteoutPrefix = ".wh."
	WhiteoutMeta   = ".wh..wh."
	OpaqueWhiteout = ".wh..wh..opq"
)

func invalid(name, format string, a ...any) error {
	return fmt.Errorf("layer entry %q: %s: %w", name, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

func exhausted(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errdefs.ErrResourceExhausted)
}

// CleanName returns an entry's name relative to the layer's root, "." for
// the root itself. An absolute name is confined: its leading slashes go.
// A name with a ".." element, an empty name or one with a NUL byte is
// refused (invalid-argument): nothing in a layer needs them.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", invalid(name, "empty name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", invalid(name, "NUL byte in name")
	}
	rel := strings.TrimLeft(name, "/")
	for el := range strings.SplitSeq(rel, "/") {
		if el == ".." {
			return "", invalid(name, "name climbs out of the root with ..")
		}
	}
	if rel == "" {
		return ".", nil
	}
	return path.Clean(rel), nil
}

// Depth is the number of elements of a cleaned name ("." has none).
func Depth(clean string) int {
	if clean == "." {
		return 0
	}
	return strings.Count(clean, "/") + 1
}

// CheckHeader checks one entry against l and returns its cleaned name.
// Only regular files, directories, symlinks, hardlinks, device nodes and
// FIFOs are taken; sparse files are refused (their declared size is not
// what the stream carries).
func CheckHeader(h *tar.Header, l Limits) (string, error) {
	if l.MaxPathLength > 0 && len(h.Name) > l.MaxPathLength {
		return "", exhausted("layer entry %.64q...: name of %d bytes exceeds the limit of %d", h.Name, len(h.Name), l.MaxPathLength)
	}
	name, err := CleanName(h.Name)
	if err != nil {
		return "", err
	}
	if d := Depth(name); l.MaxPathDepth > 0 && d > l.MaxPathDepth {
		return "", exhausted("layer entry %.64q...: depth %d exceeds the limit of %d", h.Name, d, l.MaxPathDepth)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.IndexByte(h.Linkname, 0) >= 0 || len(h.Linkname) > 4095 {
			return "", invalid(h.Name, "bad symlink target")
		}
	case tar.TypeLink:
		if l.MaxPathLength > 0 && len(h.Linkname) > l.MaxPathLength {
			return "", exhausted("layer entry %.64q...: hardlink target of %d bytes exceeds the limit of %d", h.Name, len(h.Linkname), l.MaxPathLength)
		}
		target, err := CleanName(h.Linkname)
		if err != nil {
			return "", invalid(h.Name, "hardlink target: %v", err)
		}
		if target == "." || target == name {
			return "", invalid(h.Name, "hardlink to %q", h.Linkname)
		}
	default:
		return "", invalid(h.Name, "entry type %q is not allowed", h.Typeflag)
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", invalid(h.Name, "sparse files are not allowed")
		}
	}
	if h.Uid < 0 || h.Gid < 0 || h.Uid > 1<<32-2 || h.Gid > 1<<32-2 {
		return "", invalid(h.Name, "owner %d:%d out of range", h.Uid, h.Gid)
	}
	if h.Size < 0 {
		return "", invalid(h.Name, "negative size")
	}
	if name == "." && h.Typeflag != tar.TypeDir {
		return "", invalid(h.Name, "the root must be a directory")
	}
	base := path.Base(name)
	if strings.HasPrefix(base, WhiteoutPrefix) && !strings.HasPrefix(base, WhiteoutMeta) {
		if t := base[len(WhiteoutPrefix):]; t == "" || t == "." || t == ".." {
			return "", invalid(h.Name, "whiteout of %q", t)
		}
	}
	return name, nil
}

// symlinkGuard remembers the symlinks a layer planted, to refuse a later
// entry of the same layer that would be written through one of them: the
// symlink-then-write attack. (Across layers, the unpacker refuses to
// resolve any parent through a symlink.)
type symlinkGuard struct {
	links map[string]struct{}
	bytes int
}

// maxGuardBytes bounds the names the guard keeps, so that memory stays
// bounded whatever the layer.
const maxGuardBytes = 32 << 20

func (g *symlinkGuard) check(name string, h *tar.Header) error {
	if len(g.links) > 0 {
		if p, ok := g.through(name); ok {
			return invalid(h.Name, "written through the symlink %q planted by the same layer", p)
		}
		if h.Typeflag == tar.TypeLink {
			target, _ := CleanName(h.Linkname)
			if p, ok := g.through(target); ok {
				return invalid(h.Name, "hardlink target resolved through the symlink %q", p)
			}
		}
	}
	if h.Typeflag == tar.TypeSymlink {
		if g.links == nil {
			g.links = map[string]struct{}{}
		}
		if _, ok := g.links[name]; !ok {
			if g.bytes += len(name); g.bytes > maxGuardBytes {
				return exhausted("layer has more than %d bytes of symlink names", maxGuardBytes)
			}
			g.links[name] = struct{}{}
		}
	} else {
		g.forget(name)
	}
	return nil
}

func (g *symlinkGuard) forget(name string) {
	if _, ok := g.links[name]; ok {
		delete(g.links, name)
		g.bytes -= len(name)
	}
}

// through returns the first parent of name that is a planted symlink.
func (g *symlinkGuard) through(name string) (string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			if _, ok := g.links[name[:i]]; ok {
				return name[:i], true
			}
		}
	}
	return "", false
}
