package validate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Snapshot lists everything under dir: path, type, mode, owner, size,
// content hash, link target. Lock files ("lock" and "*.lock") are left
// out: taking a lock creates them and changes nothing else. Two equal
// snapshots mean nothing under dir changed.
func Snapshot(tb testing.TB, dir string) string {
	tb.Helper()
	s, err := snapshot(dir)
	if err != nil {
		tb.Fatalf("snapshot of %s: %v", dir, err)
	}
	return s
}

func snapshot(dir string) (string, error) {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Name() == "lock" || strings.HasSuffix(d.Name(), ".lock") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %s", fi.Size(), hex.EncodeToString(h.Sum(nil)))
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + t
		case fi.Mode()&fs.ModeDevice != 0:
			line += fmt.Sprintf(" dev %d", st.Rdev)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n"), nil
}

// storeIndex mirrors the parts of store.json the checks read.
type storeIndex struct {
	Images map[digest.Digest]struct {
		Config digest.Digest   `json:"config"`
		Blobs  []digest.Digest `json:"blobs"`
	} `json:"images"`
	Tags    map[string]digest.Digest `json:"tags"`
	Holders map[string]digest.Digest `json:"holders"`
}

// Store checks an image store's invariants: every tag names an image,
// every image's manifest, config and layers are stored and match their
// digests, no blob is stored that no image uses, blobs are read-only, and
// no import is left in progress. Of the unpacked trees: every one belongs
// to an image or to a holder of its kind, no unpack or removal is left in
// progress, an import's tree (.fresh-HEX) is there only for an image of
// the store, and no tree under rootfs/ (setuid bits cleared) holds a
// setuid or setgid file or a file capability.
func Store(dir string) error {
	var idx storeIndex
	b, err := os.ReadFile(filepath.Join(dir, "store.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			return fmt.Errorf("store.json: %w", err)
		}
	}
	var errs []error
	for t, d := range idx.Tags {
		if _, ok := idx.Images[d]; !ok {
			errs = append(errs, fmt.Errorf("tag %q names %s, which is not an image", t, d))
		}
	}
	used := map[digest.Digest]bool{}
	for d, im := range idx.Images {
		for _, b := range append([]digest.Digest{d}, im.Blobs...) {
			used[b] = true
			if err := checkBlob(dir, b); err != nil {
				errs = append(errs, fmt.Errorf("image %s: %w", d, err))
			}
		}
		if len(im.Blobs) == 0 || im.Blobs[0] != im.Config {
			errs = append(errs, fmt.Errorf("image %s: blobs do not start with the config", d))
		}
	}
	_ = filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		alg := filepath.Base(filepath.Dir(p))
		if !used[digest.NewDigestFromEncoded(digest.Algorithm(alg), d.Name())] {
			errs = append(errs, fmt.Errorf("blob %s:%s is stored but no image uses it", alg, d.Name()))
		}
		return nil
	})
	if ents, _ := os.ReadDir(filepath.Join(dir, "ingest")); len(ents) > 0 {
		errs = append(errs, fmt.Errorf("ingest holds %d entries: an import left them", len(ents)))
	}
	errs = append(errs, checkTrees(dir, &idx)...)
	return errors.Join(errs...)
}

// treeKinds are the kinds of unpacked trees a store keeps: the directory,
// the suffix of a hold's key in store.json, and what Tree allows.
var treeKinds = []struct {
	dir, suffix string
	opts        TreeOptions
}{
	{"rootfs", "", TreeOptions{}},
	{"rootfs-setid", "/setid", TreeOptions{AllowSetid: true}},
}

func checkTrees(dir string, idx *storeIndex) []error {
	var errs []error
	for _, k := range treeKinds {
		held, images := map[string]bool{}, map[string]bool{}
		for d := range idx.Images {
			held[d.Encoded()] = true
			images[d.Encoded()] = true
		}
		for key, d := range idx.Holders {
			holder, ok := strings.CutSuffix(key, k.suffix)
			if ok && !strings.Contains(holder, "/") {
				held[d.Encoded()] = true
			}
		}
		ents, _ := os.ReadDir(filepath.Join(dir, k.dir))
		for _, e := range ents {
			n, p := e.Name(), filepath.Join(dir, k.dir, e.Name())
			switch {
			case strings.HasSuffix(n, ".lock") && e.Type().IsRegular():
			case strings.HasPrefix(n, ".fresh-"):
				// A tree an import put together, for its image's first
				// Rootfs or Unpack: its tree and the unpack's stats.
				if !images[strings.TrimPrefix(n, ".fresh-")] {
					errs = append(errs, fmt.Errorf("%s: an import's tree of no image", p))
					continue
				}
				ents, err := os.ReadDir(p)
				if err != nil || len(ents) != 2 || ents[0].Name() != "stats.json" || ents[1].Name() != "tree" {
					errs = append(errs, fmt.Errorf("%s: want tree and stats.json, have %d entries (%v)", p, len(ents), err))
					continue
				}
				if err := Tree(filepath.Join(p, "tree"), k.opts); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
				}
			case strings.HasPrefix(n, "."):
				errs = append(errs, fmt.Errorf("%s: left by an unpack or a removal", p))
			case !held[n]:
				errs = append(errs, fmt.Errorf("%s: a tree of no image and no holder", p))
			default:
				if err := Tree(p, k.opts); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
				}
			}
		}
	}
	return errs
}

func checkBlob(dir string, d digest.Digest) error {
	p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o222 != 0 {
		return fmt.Errorf("blob %s is writable (%v)", d, fi.Mode())
	}
	v := d.Verifier()
	if _, err := io.Copy(v, f); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s does not match its digest", d)
	}
	return nil
}

// TreeOptions are what Tree allows.
type TreeOptions struct {
	AllowDevices bool
	AllowSetid   bool
}

// Tree checks an unpacked root filesystem: no device node, no setuid or
// setgid file, no file capability (unless allowed), no trusted.* extended
// attribute.
func Tree(root string, o TreeOptions) error {
	var errs []error
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m := fi.Mode()
		if m&fs.ModeDevice != 0 && !o.AllowDevices {
			errs = append(errs, fmt.Errorf("%s: device node", rel))
		}
		if !m.IsDir() && m&(fs.ModeSetuid|fs.ModeSetgid) != 0 && !o.AllowSetid {
			errs = append(errs, fmt.Errorf("%s: setuid/setgid (%v)", rel, m))
		}
		if m&fs.ModeSymlink != 0 {
			return nil
		}
		names, err := listxattr(p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") || (n == "security.capability" && !o.AllowSetid) {
				errs = append(errs, fmt.Errorf("%s: xattr %s", rel, n))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

func listxattr(p string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}
