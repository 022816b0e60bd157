package image

import (
	"context"
	"fmt"
	"sort"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// TagPolicy says which tags an import may create. The zero value keeps
// the images by digest only and creates no tag: an archive's own tags are
// a claim of its author, not a decision of the host.
type TagPolicy struct {
	// Expect lists the archive tags the caller expects and accepts. Each
	// must be in the archive (or the import is refused, invalid-argument);
	// the archive's other tags are skipped.
	Expect []string
	// Prefix, a repository path such as "tenants/a", rewrites every tag
	// of the archive (or only the expected ones) under it:
	// "ubuntu:22.04" becomes "tenants/a/ubuntu:22.04". It cannot be
	// combined with Name.
	Prefix string
	// Name tags the one image of the archive with this reference,
	// whatever the archive claims.
	Name string
	// AllowRetag lets the import move a tag that names another image.
	// Without it such an import is refused with already-exists and
	// changes nothing.
	AllowRetag bool
}

// TagAction is what an import did with a tag.
type TagAction string

// The tag actions an ImportResult reports.
const (
	TagCreated   TagAction = "created"   // the tag did not exist
	TagMoved     TagAction = "moved"     // it named another image (AllowRetag)
	TagUnchanged TagAction = "unchanged" // it already named this image
	TagSkipped   TagAction = "skipped"   // the archive claimed it; the policy did not take it
)

// TagChange is one tag an import created, moved, kept or skipped.
type TagChange struct {
	Ref    string
	Digest digest.Digest
	Action TagAction
	// Previous is the image a moved tag named before.
	Previous digest.Digest `json:",omitempty"`
	// Reason says why a tag was skipped.
	Reason string `json:",omitempty"`
}

type tagWant struct {
	ref    string
	digest digest.Digest
}

// check validates the policy's own fields.
func (p TagPolicy) check() error {
	if p.Name != "" && (len(p.Expect) > 0 || p.Prefix != "") {
		return fmt.Errorf("tag policy: Name cannot be combined with Expect or Prefix: %w", errdefs.ErrInvalidArgument)
	}
	if p.Name != "" {
		if _, err := NormalizeTag(p.Name); err != nil {
			return err
		}
	}
	for _, e := range p.Expect {
		if _, err := NormalizeTag(e); err != nil {
			return err
		}
	}
	if p.Prefix != "" {
		if _, err := p.prefix(); err != nil {
			return err
		}
	}
	return nil
}

// prefix returns the normalized prefix, refusing one that normalization
// would erase ("docker.io/library" confines nothing).
func (p TagPolicy) prefix() (string, error) {
	pfx, err := checkPrefix(p.Prefix)
	if err != nil {
		return "", err
	}
	probe, err := NormalizeTag(pfx + "x:y")
	if err != nil || len(probe) <= len("x:y") {
		return "", fmt.Errorf("tag prefix %q: confines nothing: %w", p.Prefix, errdefs.ErrInvalidArgument)
	}
	return probe[:len(probe)-len("x:y")], nil
}

// plan decides the tags an import wants to create from the archive's
// claims, before looking at the store.
func (p TagPolicy) plan(ps []*pending) ([]tagWant, []TagChange, error) {
	if err := p.check(); err != nil {
		return nil, nil, err
	}
	claimed, skipped, err := claimTags(ps)
	if err != nil {
		return nil, nil, err
	}
	wants, take, err := p.selectTags(ps, claimed)
	if err != nil {
		return nil, nil, err
	}
	if p.Prefix != "" {
		var out []TagChange
		if wants, out, err = p.underPrefix(wants); err != nil {
			return nil, nil, err
		}
		skipped = append(skipped, out...)
	}
	skipped = append(skipped, p.notTaken(claimed, take)...)
	sort.Slice(wants, func(i, j int) bool { return wants[i].ref < wants[j].ref })
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].Ref < skipped[j].Ref })
	seen := map[string]digest.Digest{}
	for _, w := range wants {
		if d, ok := seen[w.ref]; ok && d != w.digest {
			return nil, nil, fmt.Errorf("tag %q would name two images: %w", w.ref, errdefs.ErrInvalidArgument)
		}
		seen[w.ref] = w.digest
	}
	return wants, skipped, nil
}

// claimTags maps each valid tag of the archive to its image (a tag given
// to two images is refused) and skips the invalid ones.
func claimTags(ps []*pending) (map[string]digest.Digest, []TagChange, error) {
	claimed := map[string]digest.Digest{}
	var skipped []TagChange
	for _, pi := range ps {
		for _, t := range pi.tags {
			if d, ok := claimed[t]; ok && d != pi.digest {
				return nil, nil, fmt.Errorf("the archive gives tag %q to two images (%s and %s): %w", t, d, pi.digest, errdefs.ErrInvalidArgument)
			}
			claimed[t] = pi.digest
		}
		for _, t := range pi.badTags {
			skipped = append(skipped, TagChange{Ref: t, Digest: pi.digest, Action: TagSkipped, Reason: "not a valid reference"})
		}
	}
	return claimed, skipped, nil
}

// selectTags returns the tags the policy wants, before any prefix, and
// which of the archive's claimed tags they take.
func (p TagPolicy) selectTags(ps []*pending, claimed map[string]digest.Digest) ([]tagWant, map[string]bool, error) {
	var wants []tagWant
	take := map[string]bool{}
	switch {
	case p.Name != "":
		if len(ps) != 1 {
			return nil, nil, fmt.Errorf("tag %q: the archive holds %d images, not one: %w", p.Name, len(ps), errdefs.ErrInvalidArgument)
		}
		ref, _ := NormalizeTag(p.Name)
		wants = append(wants, tagWant{ref, ps[0].digest})
	case len(p.Expect) > 0:
		for _, e := range p.Expect {
			ref, _ := NormalizeTag(e)
			d, ok := claimed[ref]
			if !ok {
				return nil, nil, fmt.Errorf("expected tag %q is not in the archive: %w", ref, errdefs.ErrInvalidArgument)
			}
			take[ref] = true
			wants = append(wants, tagWant{ref, d})
		}
	case p.Prefix != "":
		for t := range claimed {
			take[t] = true
			wants = append(wants, tagWant{t, claimed[t]})
		}
	}
	return wants, take, nil
}

// underPrefix rewrites wants under the policy's prefix; it returns those
// kept and the skipped ones that have no place under it.
func (p TagPolicy) underPrefix(wants []tagWant) ([]tagWant, []TagChange, error) {
	pfx, err := p.prefix()
	if err != nil {
		return nil, nil, err
	}
	var skipped []TagChange
	kept := wants[:0]
	for _, w := range wants {
		ref, err := NormalizeTag(pfx + w.ref)
		switch {
		case err == nil:
			kept = append(kept, tagWant{ref, w.digest})
		case len(p.Expect) > 0:
			return nil, nil, fmt.Errorf("expected tag %q under prefix %q: %w", w.ref, p.Prefix, err)
		default:
			// A tag such as "host:5000/x:1" has no place under a
			// prefix: skipped, not refused.
			skipped = append(skipped, TagChange{Ref: w.ref, Digest: w.digest, Action: TagSkipped, Reason: "cannot be rewritten under the prefix"})
		}
	}
	return kept, skipped, nil
}

// notTaken skips, with the reason, the archive's tags the policy did not
// take.
func (p TagPolicy) notTaken(claimed map[string]digest.Digest, take map[string]bool) []TagChange {
	var skipped []TagChange
	for t, d := range claimed {
		if !take[t] {
			reason := "not expected (the default policy creates no tag)"
			if p.Name != "" {
				reason = "the image was named by the caller"
			} else if len(p.Expect) > 0 {
				reason = "not among the expected tags"
			}
			skipped = append(skipped, TagChange{Ref: t, Digest: d, Action: TagSkipped, Reason: reason})
		}
	}
	return skipped
}

// apply checks the wanted tags against the store's and records them in
// idx, or refuses the whole import when one would move without
// AllowRetag.
func (p TagPolicy) apply(idx *index, wants []tagWant) ([]TagChange, error) {
	var changes []TagChange
	for _, w := range wants {
		cur, ok := idx.Tags[w.ref]
		switch {
		case !ok:
			changes = append(changes, TagChange{Ref: w.ref, Digest: w.digest, Action: TagCreated})
		case cur == w.digest:
			changes = append(changes, TagChange{Ref: w.ref, Digest: w.digest, Action: TagUnchanged})
		case p.AllowRetag:
			changes = append(changes, TagChange{Ref: w.ref, Digest: w.digest, Action: TagMoved, Previous: cur})
		default:
			return nil, fmt.Errorf("tag %q already names image %s (allow retagging to move it): %w", w.ref, cur, errdefs.ErrAlreadyExists)
		}
	}
	for _, c := range changes {
		idx.Tags[c.Ref] = c.Digest
	}
	return changes, nil
}

// Tag makes the tag dst name the image src names (a tag or a digest, as
// Get takes). A tag dst that names another image moves only with force;
// otherwise Tag fails with already-exists and changes nothing.
func (s *Store) Tag(ctx context.Context, src, dst string, force bool) (TagChange, error) {
	tag, err := NormalizeTag(dst)
	if err != nil {
		return TagChange{}, err
	}
	var ch TagChange
	err = s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		d, err := resolveRef(idx, src)
		if err != nil {
			return err
		}
		changes, err := TagPolicy{AllowRetag: force}.apply(idx, []tagWant{{ref: tag, digest: d}})
		if err != nil {
			return err
		}
		if ch = changes[0]; ch.Action == TagUnchanged {
			return nil
		}
		return s.writeIndex(idx)
	})
	return ch, err
}
