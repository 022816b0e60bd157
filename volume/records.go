package volume

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

	"github.com/berthrun/berth/internal/fsutil"
)

// record is the on-disk state of one attachment.
type record struct {
	ID       string     `json:"id"`
	Owner    string     `json:"owner"`
	Spec     Spec       `json:"spec"`
	Complete bool       `json:"complete"`
	FS       Filesystem `json:"fs,omitempty"`
	// Identity names the source (device number or file inode) for
	// sharing and exclusivity.
	Identity string `json:"identity,omitempty"`
	// MountKey names the host mount under mnt/, shared by read-only
	// attachments of one source.
	MountKey string `json:"mount_key,omitempty"`
	// Node is a raw-block device node under dev/.
	Node         string `json:"node,omitempty"`
	Major, Minor uint32
	Opts         AttachOptions `json:"opts"`
	// LoopDevice is the loop device of a raw-block volume, bound to the
	// source whose device and inode the kernel gave as BackingDev and
	// BackingIno: undo frees that device if it is still bound to that
	// file, whatever path the file has now.
	LoopDevice             string `json:"loop_device,omitempty"`
	BackingDev, BackingIno uint64 `json:",omitempty"`
	// Retired marks a volume detached from a container that still
	// exists (Retire): gone from the host, but its source stays the
	// container's until DetachAll, as it may hold descriptors of it.
	Retired bool `json:"retired,omitempty"`
}

func (m *Manager) recordPath(id string) string {
	return filepath.Join(m.dir, "records", id+".json")
}

func (m *Manager) records() ([]*record, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, "records"))
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var r record
		if err := fsutil.ReadJSON(filepath.Join(m.dir, "records", e.Name()), &r); err != nil {
			return nil, fmt.Errorf("volume record %s: %w", e.Name(), err)
		}
		out = append(out, &r)
	}
	return out, nil
}

// attachmentID is stable for an owner and destination.
func attachmentID(owner, dst string) string {
	h := sha256.Sum256([]byte(dst))
	return owner + "." + hex.EncodeToString(h[:6])
}

// Unfinished is an attachment a process left incomplete while its owner
// lived on (a hot attach killed halfway): the container may hold the
// volume already.
type Unfinished struct {
	Owner string
	Spec  Spec
}

// Unfinished lists the incomplete attachments of owners live reports as
// existing. Recovery leaves them alone: the caller takes each out of its
// container first (releasing a raw device the container still holds would
// hand its number to the next attach), then Detaches it.
func (m *Manager) Unfinished(live func(owner string) bool) ([]Unfinished, error) {
	recs, err := m.records()
	if err != nil {
		return nil, err
	}
	var out []Unfinished
	for _, r := range recs {
		if !r.Complete && !r.Retired && live(r.Owner) {
			out = append(out, Unfinished{Owner: r.Owner, Spec: r.Spec})
		}
	}
	return out, nil
}

func mountKey(identity string, ro bool) string {
	h := sha256.Sum256([]byte(identity + ":" + strconv.FormatBool(ro)))
	return hex.EncodeToString(h[:8])
}

// sharedMountOf reports whether another complete record already holds the
// host mount rec would use.
func sharedMountOf(rec *record, recs []*record) bool {
	key := mountKey(rec.Identity, rec.Spec.ReadOnly)
	for _, r := range recs {
		if r.ID != rec.ID && r.MountKey == key && r.Complete {
			return true
		}
	}
	return false
}

func (m *Manager) mountpoint(key string) string { return filepath.Join(m.dir, "mnt", key) }

// nodePath is where a raw-block attachment's device node is made.
func (m *Manager) nodePath(id string) string { return filepath.Join(m.dir, "dev", id) }

func findRecord(recs []*record, owner, dst string) *record {
	id := attachmentID(owner, filepath.Clean(dst))
	for _, r := range recs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// withRecords runs fn on every record under the manager's lock.
func (m *Manager) withRecords(fn func(recs []*record) error) error {
	unlock, err := m.lock()
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := m.records()
	if err != nil {
		return err
	}
	return fn(recs)
}

// Recover undoes attachments a crashed process left incomplete, and, when
// live is given, those whose owner no longer exists. Owners locked by a live
// process (a create in progress) are left alone. It does not wait for loop
// devices that other mount namespaces or processes still hold once berth's
// mounts are gone: the kernel frees each with its last holder.
func (m *Manager) Recover(live func(owner string) bool) error {
	return m.withRecords(func(recs []*record) error { return m.recover(recs, live) })
}

func (m *Manager) recover(recs []*record, live func(owner string) bool) error {
	// Recovery runs as a manager opens, with no caller's context to bound
	// a wait: devices still held elsewhere are looked at once, not waited
	// for, and are no failure.
	now, cancel := context.WithCancel(context.Background())
	cancel()
	var errs []error
	for i, r := range recs {
		if live != nil && live(r.Owner) {
			continue // complete, or Unfinished: its container may hold it
		}
		if r.Complete && live == nil {
			continue
		}
		release, err := fsutil.LockFile(filepath.Join(m.dir, "owners", r.Owner+".lock"), fsutil.LockOptions{NoWait: true, Remove: true})
		if err != nil {
			continue // its owner is being created or changed right now
		}
		errs = append(errs, withoutHeld(m.undo(now, r, recs)))
		recs[i] = &record{}
		release()
	}
	// Mount points no record names: a crash between mount and record is
	// impossible (the record comes first), but an operator may have
	// removed records by hand.
	used := map[string]bool{}
	for _, r := range recs {
		used[r.MountKey] = true
	}
	ents, _ := os.ReadDir(filepath.Join(m.dir, "mnt"))
	for _, e := range ents {
		if !used[e.Name()] {
			errs = append(errs, unmountDir(m.mountpoint(e.Name())))
		}
	}
	return errors.Join(errs...)
}
