package dockersave_test

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/dockersave"
)

func TestParseManifest(t *testing.T) {
	es, err := dockersave.ParseManifest([]byte(`[{"Config":"./abc.json","RepoTags":["a:1"],"Layers":["x//layer.tar"]}]`))
	require.NoError(t, err)
	assert.Equal(t, "abc.json", es[0].Config)
	assert.Equal(t, []string{"x/layer.tar"}, es[0].Layers)
	for name, doc := range map[string]string{
		"not json":       `{`,
		"empty":          `[]`,
		"dotdot config":  `[{"Config":"../c.json"}]`,
		"absolute layer": `[{"Config":"c.json","Layers":["/etc/passwd"]}]`,
		"dot":            `[{"Config":"."}]`,
		"nul":            "[{\"Config\":\"a\\u0000b\"}]",
		"foreign":        `[{"Config":"c.json","LayerSources":{"sha256:1":{}}}]`,
	} {
		_, err := dockersave.ParseManifest([]byte(doc))
		assert.True(t, errdefs.IsInvalidArgument(err), "%s: %v", name, err)
	}
	_, err = dockersave.ParseManifest([]byte("[" + strings.Repeat(`{"Config":"c"},`, dockersave.MaxImages) + `{"Config":"c"}]`))
	assert.True(t, errdefs.IsResourceExhausted(err), "%v", err)
}

// FuzzParseManifest: whatever manifest.json says, every path that comes
// out is relative, clean and inside the archive.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`[{"Config":"a.json","RepoTags":["x:1"],"Layers":["l/layer.tar","../x"]}]`))
	f.Add([]byte(`[{"Config":"./a/../b.json","Layers":["/abs"]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := dockersave.ParseManifest(b)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsResourceExhausted(err) {
				t.Fatalf("class: %v", err)
			}
			return
		}
		for _, e := range es {
			for _, p := range append([]string{e.Config}, e.Layers...) {
				if p == "" || p == "." || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
					t.Fatalf("path %q escapes", p)
				}
				if c, err := dockersave.CleanPath(p); err != nil || c != p {
					t.Fatalf("path %q not clean (%q, %v)", p, c, err)
				}
			}
		}
	})
}
