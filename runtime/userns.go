package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/subid"
	"golang.org/x/sys/unix"
)

// IDPool is the host UID/GID space berth hands out to user-namespaced
// containers: Count blocks of BlockSize IDs starting at Start. Each
// container gets one whole block, for both UIDs and GIDs.
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

// idAllocator records allocations in a JSON file under the state dir,
// guarded by flock so that several processes on one root never hand out the
// same block.
type idAllocator struct {
	pool IDPool
	dir  string
}

type idRecord struct {
	Blocks map[string]IDRange `json:"blocks"`
}

func (a *idAllocator) lock() (*os.File, error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(a.dir, "userns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (a *idAllocator) load() (*idRecord, error) {
	rec := &idRecord{Blocks: map[string]IDRange{}}
	b, err := os.ReadFile(filepath.Join(a.dir, "userns.json"))
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("userns record: %w", err)
	}
	if rec.Blocks == nil {
		rec.Blocks = map[string]IDRange{}
	}
	return rec, nil
}

func (a *idAllocator) save(rec *idRecord) error {
	return fsutil.WriteJSON(filepath.Join(a.dir, "userns.json"), rec)
}

// allocate gives id a block; the caller holds id's owner lock, and id has
// no container. live reports whether a recorded owner still exists (or is
// being created); blocks of owners that vanished (a crash between
// allocation and create) are reclaimed when the pool runs out.
func (a *idAllocator) allocate(id string, live func(string) bool) (IDRange, error) {
	l, err := a.lock()
	if err != nil {
		return IDRange{}, err
	}
	defer l.Close()
	rec, err := a.load()
	if err != nil {
		return IDRange{}, err
	}
	if r, ok := rec.Blocks[id]; ok {
		// The caller holds id's owner lock and id has no container: the
		// block is a crashed create's, and id may have it again.
		return r, nil
	}
	r, ok := a.free(rec)
	if !ok && live != nil {
		for owner := range rec.Blocks {
			if !live(owner) {
				delete(rec.Blocks, owner)
			}
		}
		r, ok = a.free(rec)
	}
	if !ok {
		return IDRange{}, fmt.Errorf("user namespace pool of %d blocks is exhausted: %w", a.pool.Count, errdefs.ErrResourceExhausted)
	}
	rec.Blocks[id] = r
	return r, a.save(rec)
}

func (a *idAllocator) free(rec *idRecord) (IDRange, bool) {
	used := map[uint32]bool{}
	for _, r := range rec.Blocks {
		used[r.HostID] = true
	}
	var skip []idSpan
	if a.pool.SkipSubordinate {
		skip = append(readSubordinate("/etc/subuid"), readSubordinate("/etc/subgid")...)
	}
	for i := uint32(0); i < a.pool.Count; i++ {
		start := uint64(a.pool.Start) + uint64(i)*uint64(a.pool.BlockSize)
		end := start + uint64(a.pool.BlockSize)
		if end > 1<<32-1 {
			break
		}
		if used[uint32(start)] || overlaps(skip, start, end) {
			continue
		}
		return IDRange{HostID: uint32(start), Size: a.pool.BlockSize}, true
	}
	return IDRange{}, false
}

func (a *idAllocator) release(id string) error {
	l, err := a.lock()
	if err != nil {
		return err
	}
	defer l.Close()
	rec, err := a.load()
	if err != nil {
		return err
	}
	if _, ok := rec.Blocks[id]; !ok {
		return nil
	}
	delete(rec.Blocks, id)
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
