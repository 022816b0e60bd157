package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fsutil"
)

// HostClaimsDir holds the host's one record of the block devices and image
// files berth has attached, whatever the manager's directory: a source
// attached read-write (or raw) under one state root is refused under any
// other, as under its own. It lives under /run: what it records (mounts,
// loop devices, nodes in use) does not outlive a boot, so it is written
// without waiting for the disk.
const HostClaimsDir = "/run/berth/claims"

// claimsDir is HostClaimsDir; tests keep their claims apart.
var claimsDir = HostClaimsDir

// claim is one attachment of a source, named by its record's file: the
// claim holds while that file exists.
type claim struct {
	Identity string `json:"identity"`
	Record   string `json:"record"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Raw      bool   `json:"raw,omitempty"`
	Owner    string `json:"owner"`
	Source   string `json:"source"`
}

func (c claim) shares(o claim) bool { return c.ReadOnly && o.ReadOnly && !c.Raw && !o.Raw }

// withClaims runs fn on the host's claims, those of records that no
// longer exist dropped, under the host's lock, and saves what fn leaves.
func withClaims(fn func(cs []claim) ([]claim, error)) error {
	if err := os.MkdirAll(claimsDir, 0o700); err != nil {
		return err
	}
	unlock, err := fsutil.Lock(filepath.Join(claimsDir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(claimsDir, "claims.json")
	var cs []claim
	if err := fsutil.ReadJSON(path, &cs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("source claims: %w", err)
	}
	cs = slices.DeleteFunc(cs, func(c claim) bool {
		_, err := os.Stat(c.Record)
		return errors.Is(err, os.ErrNotExist)
	})
	cs, err = fn(cs)
	if err != nil {
		return err
	}
	return fsutil.WriteJSONVolatile(path, cs)
}

// claimSource claims rec's source (a block device or image file) for the
// record at path, or refuses with failed-precondition when another
// manager's attachment holds it in a way the two cannot share.
func claimSource(rec *record, path string) error {
	mine := claim{Identity: rec.Identity, Record: path, ReadOnly: rec.Spec.ReadOnly, Raw: rec.Spec.Mode == ModeRawBlock, Owner: rec.Owner, Source: rec.Spec.Source}
	return withClaims(func(cs []claim) ([]claim, error) {
		for _, c := range cs {
			if c.Identity == mine.Identity && c.Record != path && filepath.Dir(filepath.Dir(c.Record)) != filepath.Dir(filepath.Dir(path)) && !c.shares(mine) {
				return nil, fmt.Errorf("source %s is attached to %s under another state root (%s); only read-only host mounts share: %w", rec.Spec.Source, c.Owner, filepath.Dir(filepath.Dir(c.Record)), errdefs.ErrFailedPrecondition)
			}
		}
		return append(slices.DeleteFunc(cs, func(c claim) bool { return c.Record == path }), mine), nil
	})
}

// releaseSource drops the claim of the record at path.
func releaseSource(path string) error {
	return withClaims(func(cs []claim) ([]claim, error) {
		return slices.DeleteFunc(cs, func(c claim) bool { return c.Record == path }), nil
	})
}
