package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/idmap"
)

// DefaultStateDir is where the backend keeps the ID-mapped mounts it makes
// for user-namespaced containers (under /run: mounts do not outlive a boot).
const DefaultStateDir = "/run/berth/docker"

// Docker cannot ID-map a bind mount. For a bind the spec asks to be
// ID-mapped ("idmap", as berth's volumes are in a user namespace), berth
// makes the ID-mapped mount on the host itself, with the daemon's mapping,
// under <state>/<scope key>/<id>/<n>, and hands Docker a plain bind of it:
// a bind keeps its source's ID mapping. Delete unmounts them; Open removes
// those of containers that no longer exist (a crash mid-create).

// mountsDir is the directory of container id's ID-mapped mounts.
func (r *Runtime) mountsDir(id string) string {
	return filepath.Join(r.scopeDir(), id)
}

func (r *Runtime) scopeDir() string {
	sum := sha256.Sum256([]byte(r.scope))
	return filepath.Join(r.stateDir, hex.EncodeToString(sum[:8]))
}

// idmapper makes the ID-mapped mounts of one container while it is being
// created, holding its directory's lock.
type idmapper struct {
	r      *Runtime
	id     string
	dir    string
	unlock func()
	n      int
}

func (r *Runtime) newIDMapper(id string) *idmapper {
	return &idmapper{r: r, id: id, dir: r.mountsDir(id)}
}

// mapBind mounts src ID-mapped with the daemon's mapping and returns where.
func (m *idmapper) mapBind(src string) (string, error) {
	if m.r.remap == nil {
		return "", notImplemented("ID-mapped bind of %s: this daemon runs without userns-remap", src)
	}
	for m.unlock == nil {
		if err := os.MkdirAll(filepath.Dir(m.dir), 0o711); err != nil {
			return "", err
		}
		// The directory is this create's own: one left by another
		// container of the same ID is not touched.
		if err := os.Mkdir(m.dir, 0o711); errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("ID-mapped mounts of %q exist already (another create of the same ID): %w", m.id, errdefs.ErrAlreadyExists)
		} else if errors.Is(err, os.ErrNotExist) {
			continue // the scope's directory was just removed as empty
		} else if err != nil {
			return "", err
		}
		// A concurrent Open may have taken the new directory for a stale
		// one before the lock: start again.
		unlock, err := fsutil.LockFile(m.dir, fsutil.LockOptions{Existing: true})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		m.unlock = unlock
	}
	fi, err := os.Stat(src)
	if err != nil {
		return "", invalid("bind source: %v", err)
	}
	dst := filepath.Join(m.dir, strconv.Itoa(m.n))
	m.n++
	if fi.IsDir() {
		err = os.Mkdir(dst, 0o700)
	} else {
		err = os.WriteFile(dst, nil, 0o600)
	}
	if err != nil {
		return "", err
	}
	if err := idmap.BindMount(src, dst, m.r.remap.UID, m.r.remap.GID); err != nil {
		return "", notImplemented("ID-mapped bind of %s: %v", src, err)
	}
	return dst, nil
}

// done releases the lock; on failure it also removes the mounts.
func (m *idmapper) done(ok bool) {
	if m.unlock == nil {
		return
	}
	if !ok {
		_ = removeMounts(m.dir)
	}
	m.unlock()
}

// removeMounts unmounts everything under dir and removes it.
func removeMounts(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := fsutil.Unmount(p); err != nil {
			return err
		}
	}
	// Never walk into a mount: remove the emptied points one by one.
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(dir)) // the scope's, once empty
	return nil
}

// removeStaleMounts removes the ID-mapped mounts of containers of this
// scope that do not exist (a create that crashed), skipping those being
// created now (their directory is locked).
func (r *Runtime) removeStaleMounts(ctx context.Context) error {
	ents, err := os.ReadDir(r.scopeDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(r.scopeDir(), e.Name())
		unlock, err := fsutil.LockFile(dir, fsutil.LockOptions{Existing: true, NoWait: true})
		if err != nil {
			continue // being created
		}
		_, err = r.inspect(ctx, e.Name())
		if errdefs.IsNotFound(err) {
			err = removeMounts(dir)
		}
		unlock()
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("stale mounts of %s: %w", e.Name(), err)
		}
	}
	return nil
}
