package libcontainer

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	lc "github.com/opencontainers/runc/libcontainer"
)

// A container's state lives in two JSON files that hold its whole spec and
// config (its seccomp profile alone is some 30 KB): a run's create, start,
// wait and delete would parse them half a dozen times. What was read from
// a file is kept and handed out again while the file is the one it was
// read from (same inode, size and time): both are replaced on every change
// (libcontainer's state.json, berth's record.json), so a change by any
// process, or the container's removal, makes the next read parse it anew.
// What is handed out is shared: callers do not change it.

type fileKey struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func keyOf(path string) (fileKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileKey{}, err
	}
	k := fileKey{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = st.Ino
	}
	return k, nil
}

// fileCacheMax bounds the files a cache keeps: a container's state is some
// 100 KB parsed, and a caller may have thousands.
const fileCacheMax = 512

// fileCache keeps what load made of each file, by path.
type fileCache[T any] struct {
	mu sync.Mutex
	m  map[string]cached[T]
}

type cached[T any] struct {
	key fileKey
	v   T
}

// get returns what load makes of path, parsing the file only when it
// changed since the last time.
func (c *fileCache[T]) get(path string, load func() (T, error)) (T, error) {
	key, err := keyOf(path)
	if err != nil {
		c.mu.Lock()
		delete(c.m, path)
		c.mu.Unlock()
		return load() // the loader's own error for a missing file
	}
	c.mu.Lock()
	if e, ok := c.m[path]; ok && e.key == key {
		c.mu.Unlock()
		return e.v, nil
	}
	c.mu.Unlock()
	v, err := load()
	if err != nil {
		return v, err
	}
	// Kept only if the file did not change while it was read.
	if after, err := keyOf(path); err == nil && after == key {
		c.mu.Lock()
		c.keep(path, cached[T]{key, v})
		c.mu.Unlock()
	}
	return v, nil
}

// keep stores e for path, within fileCacheMax entries (c.mu is held).
func (c *fileCache[T]) keep(path string, e cached[T]) {
	if c.m == nil {
		c.m = map[string]cached[T]{}
	}
	if _, ok := c.m[path]; !ok && len(c.m) >= fileCacheMax {
		// Full: one entry goes, any (a program keeping thousands of
		// containers reads them again).
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[path] = e
}

// put keeps v as what path holds, for a caller that has just written v
// there and is its only writer: the next get takes v without reading the
// file, as long as the file is still that one.
func (c *fileCache[T]) put(path string, v T) {
	key, err := keyOf(path)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keep(path, cached[T]{key, v})
}

// loadContainer is lc.Load through the cache; errors are libcontainer's.
func (r *Runtime) loadContainer(id string) (*lc.Container, error) {
	return r.loads.get(filepath.Join(r.runcRoot(), id, "state.json"), func() (*lc.Container, error) {
		return lc.Load(r.runcRoot(), id)
	})
}
