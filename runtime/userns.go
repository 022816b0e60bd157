package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/subid"
)

// IDPool is the host UID/GID space berth hands out to user-namespaced
// containers: Count blocks of BlockSize IDs starting at Start. Each
// container gets one whole block, for both UIDs and GIDs; containers that
// join another's user namespace (Config.Join) hold that one's block with
// it, and the block is free again only once none of them remains.
type IDPool struct {
	Start     uint32
	BlockSize uint32
	Count     uint32
	// SkipSubordinate leaves out blocks that overlap a range in
	// /etc/subuid or /etc/subgid, so that berth's containers never share
	// host IDs with another engine's (Docker's userns-remap uses them).
	SkipSubordinate bool
}

// DefaultIDPool starts at 100000 in blocks of 65536, as Docker and LXD do,
// and never overlaps a subordinate range another engine was given.
var DefaultIDPool = IDPool{Start: 100000, BlockSize: 65536, Count: 4096, SkipSubordinate: true}

// IDRange is one allocated block.
type IDRange struct {
	HostID uint32 `json:"host_id"`
	Size   uint32 `json:"size"`
}

// HostIDPoolDir is where the host's one record of allocated ID blocks
// lives. Every runtime on the host allocates there under one lock, whatever
// its state directory and backend: two roots never hand out one block.
const HostIDPoolDir = "/var/lib/berth/idpool"

// idAllocator records allocations in one JSON file for the host, guarded by
// flock, keyed by the runtime's state directory and the container's ID.
type idAllocator struct {
	pool IDPool
	// dir holds the host's record (HostIDPoolDir; tests use their own).
	dir string
	// root is this runtime's state directory, absolute and resolved.
	root string
}

type idBlock struct {
	Root string `json:"root"`
	ID   string `json:"id"`
	IDRange
}

type idRecord struct {
	Blocks []idBlock `json:"blocks"`
}

func (a *idAllocator) lock() (func(), error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	return fsutil.Lock(filepath.Join(a.dir, "lock"))
}

func (a *idAllocator) load() (*idRecord, error) {
	rec := &idRecord{}
	b, err := os.ReadFile(filepath.Join(a.dir, "blocks.json"))
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("ID pool record: %w", err)
	}
	return rec, nil
}

func (a *idAllocator) save(rec *idRecord) error {
	return fsutil.WriteJSON(filepath.Join(a.dir, "blocks.json"), rec)
}

func (a *idAllocator) index(rec *idRecord, id string) int {
	for i, b := range rec.Blocks {
		if b.Root == a.root && b.ID == id {
			return i
		}
	}
	return -1
}

// allocate gives id a block; the caller holds id's owner lock, and id has
// no container. live reports whether an owner of this runtime's root still
// exists (or is being created); blocks of owners that vanished (a crash
// between allocation and create) are reclaimed when the pool runs out.
// Blocks of state directories that no longer exist are dropped at once.
func (a *idAllocator) allocate(id string, live func(string) bool) (IDRange, error) {
	unlock, err := a.lock()
	if err != nil {
		return IDRange{}, err
	}
	defer unlock()
	rec, err := a.load()
	if err != nil {
		return IDRange{}, err
	}
	rec.Blocks = slices.DeleteFunc(rec.Blocks, func(b idBlock) bool {
		_, err := os.Stat(b.Root)
		return errors.Is(err, os.ErrNotExist)
	})
	if i := a.index(rec, id); i >= 0 {
		// The caller holds id's owner lock and id has no container: the
		// block is a crashed create's, and id may have it again.
		return rec.Blocks[i].IDRange, a.save(rec)
	}
	r, ok := a.free(rec)
	if !ok && live != nil {
		rec.Blocks = slices.DeleteFunc(rec.Blocks, func(b idBlock) bool { return b.Root == a.root && !live(b.ID) })
		r, ok = a.free(rec)
	}
	if !ok {
		return IDRange{}, fmt.Errorf("user namespace pool of %d blocks is exhausted on this host: %w", a.pool.Count, errdefs.ErrResourceExhausted)
	}
	rec.Blocks = append(rec.Blocks, idBlock{Root: a.root, ID: id, IDRange: r})
	return r, a.save(rec)
}

func (a *idAllocator) free(rec *idRecord) (IDRange, bool) {
	var skip []idSpan
	for _, b := range rec.Blocks {
		skip = append(skip, idSpan{uint64(b.HostID), uint64(b.HostID) + uint64(b.Size)})
	}
	if a.pool.SkipSubordinate {
		skip = append(skip, readSubordinate("/etc/subuid")...)
		skip = append(skip, readSubordinate("/etc/subgid")...)
	}
	for i := uint32(0); i < a.pool.Count; i++ {
		start := uint64(a.pool.Start) + uint64(i)*uint64(a.pool.BlockSize)
		end := start + uint64(a.pool.BlockSize)
		if end > 1<<32-1 {
			break
		}
		if overlaps(skip, start, end) {
			continue
		}
		return IDRange{HostID: uint32(start), Size: a.pool.BlockSize}, true
	}
	return IDRange{}, false
}

// share records that id holds the block of owner too (id joins owner's
// user namespace); the caller holds id's owner lock, and id has no
// container. A block goes back to the pool only once no owner holds it, so
// its IDs are never handed to another container while a process that
// runs with them may live. owner must hold a block: one that has none (it
// was never given one, or it is gone) is failed-precondition.
func (a *idAllocator) share(id, owner string) (IDRange, error) {
	unlock, err := a.lock()
	if err != nil {
		return IDRange{}, err
	}
	defer unlock()
	rec, err := a.load()
	if err != nil {
		return IDRange{}, err
	}
	i := a.index(rec, owner)
	if i < 0 {
		return IDRange{}, fmt.Errorf("container %q holds no block of the host's ID pool: %w", owner, errdefs.ErrFailedPrecondition)
	}
	r := rec.Blocks[i].IDRange
	if j := a.index(rec, id); j >= 0 {
		// A crashed create's (id has no container): its block is free.
		rec.Blocks[j].IDRange = r
	} else {
		rec.Blocks = append(rec.Blocks, idBlock{Root: a.root, ID: id, IDRange: r})
	}
	return r, a.save(rec)
}

// release gives back id's hold on its block; the block is free once no
// other owner holds it (share).
func (a *idAllocator) release(id string) error {
	unlock, err := a.lock()
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := a.load()
	if err != nil {
		return err
	}
	i := a.index(rec, id)
	if i < 0 {
		return nil
	}
	rec.Blocks = slices.Delete(rec.Blocks, i, i+1)
	return a.save(rec)
}

type idSpan struct{ start, end uint64 }

func overlaps(spans []idSpan, start, end uint64) bool {
	for _, s := range spans {
		if start < s.end && s.start < end {
			return true
		}
	}
	return false
}

// readSubordinate returns the ranges of an /etc/subuid-style file.
func readSubordinate(path string) []idSpan {
	var out []idSpan
	for _, r := range subid.Read(path) {
		out = append(out, idSpan{r.Start, r.End()})
	}
	return out
}
