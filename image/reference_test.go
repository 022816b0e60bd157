package image

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNormalizeTag(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                             "busybox:latest",
		"busybox:1":                           "busybox:1",
		"docker.io/library/busybox:1":         "busybox:1",
		"index.docker.io/library/busybox:1":   "busybox:1",
		"docker.io/user/app":                  "user/app:latest",
		"library/busybox:1":                   "busybox:1",
		"tenants/a/x:y":                       "tenants/a/x:y",
		"registry.example:5000/x/y:1":         "registry.example:5000/x/y:1",
		"localhost/x:v1.2-rc_3":               "localhost/x:v1.2-rc_3",
		"[::1]:5000/x:1":                      "[::1]:5000/x:1",
		"Registry.Example/lower/path:TagCase": "Registry.Example/lower/path:TagCase",
	} {
		got, err := NormalizeTag(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{
		"", "Bad Ref", "UPPER:1", "x:", ":1", "x::1", "../x:1", "x/../y:1", "x//y:1", "/x:1", "x/:1",
		"x:" + strings.Repeat("t", 129), strings.Repeat("a/", 128) + "x:1", "x:1\n", "x:-1",
		"x@sha256:" + strings.Repeat("a", 64),
		strings.Repeat("a", 64),
	} {
		_, err := NormalizeTag(in)
		assert.True(t, errdefs.IsInvalidArgument(err), "%q: %v", in, err)
	}
}

func TestCheckPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"tenants/a": "tenants/a/", "tenants/a/": "tenants/a/", "registry.example:5000/t": "registry.example:5000/t/",
		"docker.io/library": "docker.io/library/",
	} {
		got, err := checkPrefix(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"/", "UPPER", "a:1", "a@sha256:" + strings.Repeat("a", 64), "a//b", "../a", "a b"} {
		_, err := checkPrefix(in)
		assert.True(t, errdefs.IsInvalidArgument(err), "%q: %v", in, err)
	}
}
