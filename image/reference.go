package image

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// NormalizeTag checks a tag reference (NAME[:TAG], the distribution
// reference grammar: github.com/distribution/reference) and returns its
// canonical form: ":latest" added when no tag is given, and Docker Hub's
// implicit names shortened (reference.FamiliarString:
// "docker.io/library/busybox:1" and "index.docker.io/library/busybox:1" are
// "busybox:1"), so that an archive from docker and one from containerd
// name the same image alike. Digest references are not tags.
func NormalizeTag(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("reference %q: not NAME[:TAG]: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if _, ok := named.(reference.Digested); ok {
		return "", fmt.Errorf("reference %q: not NAME[:TAG] (a digest reference): %w", ref, errdefs.ErrInvalidArgument)
	}
	return reference.FamiliarString(reference.TagNameOnly(named)), nil
}

// checkPrefix checks a --tag-prefix: a repository path, with or without a
// trailing slash; it returns it with the slash.
func checkPrefix(p string) (string, error) {
	trimmed := strings.TrimSuffix(p, "/")
	r, err := reference.Parse(trimmed)
	if named, ok := r.(reference.Named); err != nil || !ok || named.Name() != trimmed {
		// A tag or digest is not part of a repository path.
		return "", fmt.Errorf("tag prefix %q: not a repository path: %w", p, errdefs.ErrInvalidArgument)
	}
	return trimmed + "/", nil
}

// isDigest reports whether ref is a digest (ALG:HEX).
func isDigest(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	return d, err == nil
}
