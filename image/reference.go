package image

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// The reference grammar of the distribution spec: an optional registry
// host, slash-separated lower-case path components, and a tag.
const (
	alnum         = `[a-z0-9]+`
	separator     = `(?:[._]|__|[-]+)`
	component     = alnum + `(?:` + separator + alnum + `)*`
	hostComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	host          = `(?:` + hostComponent + `(?:\.` + hostComponent + `)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
	namePattern   = `(?:` + host + `/)?` + component + `(?:/` + component + `)*`
	tagPattern    = `[\w][\w.-]{0,127}`
)

var (
	refOnce  sync.Once
	refRegex *regexp.Regexp
	pfxRegex *regexp.Regexp
)

func refRegexps() (*regexp.Regexp, *regexp.Regexp) {
	refOnce.Do(func() {
		refRegex = regexp.MustCompile(`^(` + namePattern + `)(?::(` + tagPattern + `))?$`)
		pfxRegex = regexp.MustCompile(`^` + namePattern + `$`)
	})
	return refRegex, pfxRegex
}

// maxNameLength bounds a repository name, as registries do.
const maxNameLength = 255

// NormalizeTag checks a tag reference (NAME[:TAG]) and returns its
// canonical form: ":latest" added when no tag is given, and Docker Hub's
// implicit names shortened ("docker.io/library/busybox:1" is
// "busybox:1"), so that an archive from docker and one from containerd
// name the same image alike. Digest references are not tags.
func NormalizeTag(ref string) (string, error) {
	re, _ := refRegexps()
	m := re.FindStringSubmatch(ref)
	if m == nil {
		return "", fmt.Errorf("reference %q: not NAME[:TAG]: %w", ref, errdefs.ErrInvalidArgument)
	}
	name, tag := m[1], m[2]
	if len(name) > maxNameLength {
		return "", fmt.Errorf("reference %q: name longer than %d: %w", ref, maxNameLength, errdefs.ErrInvalidArgument)
	}
	if tag == "" {
		tag = "latest"
	}
	for _, p := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"} {
		if rest, ok := strings.CutPrefix(name, p); ok && rest != "" {
			name = rest
			break
		}
	}
	return name + ":" + tag, nil
}

// checkPrefix checks a --tag-prefix: a repository path, with or without a
// trailing slash; it returns it with the slash.
func checkPrefix(p string) (string, error) {
	_, re := refRegexps()
	trimmed := strings.TrimSuffix(p, "/")
	if !re.MatchString(trimmed) {
		return "", fmt.Errorf("tag prefix %q: not a repository path: %w", p, errdefs.ErrInvalidArgument)
	}
	return trimmed + "/", nil
}

// isDigest reports whether ref is a digest (ALG:HEX).
func isDigest(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	return d, err == nil
}
