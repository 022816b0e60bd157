package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "web-1", "A.b_c-9", strings.Repeat("x", 64)} {
		require.NoError(t, ValidateID(id), id)
	}
	for _, id := range []string{"", "-a", ".a", "_a", "a/b", "..", "a b", "a\x00", strings.Repeat("x", 65), "é"} {
		err := ValidateID(id)
		require.Truef(t, errdefs.IsInvalidArgument(err), "%q: %v", id, err)
		require.Contains(t, err.Error(), "container ID")
	}
}

func TestIDPoolBlocksDoNotOverlap(t *testing.T) {
	a := &idAllocator{pool: IDPool{Start: 100000, BlockSize: 65536, Count: 8}, dir: t.TempDir(), root: t.TempDir()}
	var mu sync.Mutex
	got := map[uint32]string{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a' + i))
			r, err := a.allocate(id, nil)
			require.NoError(t, err)
			require.Equal(t, uint32(65536), r.Size)
			require.Zero(t, (r.HostID-100000)%65536)
			mu.Lock()
			defer mu.Unlock()
			require.NotContains(t, got, r.HostID)
			got[r.HostID] = id
		}()
	}
	wg.Wait()
	require.Len(t, got, 8)

	_, err := a.allocate("z", nil)
	require.Truef(t, errdefs.IsResourceExhausted(err), "full pool: %v", err)
	again, err := a.allocate("a", nil)
	require.NoError(t, err, "an owner whose create crashed gets its block back")
	require.Equal(t, "a", got[again.HostID])

	require.NoError(t, a.release("c"))
	r, err := a.allocate("z", nil)
	require.NoError(t, err)
	require.Equal(t, "c", got[r.HostID], "the released block is reused")

	// Blocks of owners that no longer exist are reclaimed when full.
	r, err = a.allocate("y", func(owner string) bool { return owner != "d" })
	require.NoError(t, err)
	require.Equal(t, "d", got[r.HostID])
}

func TestIDPoolSkipsSubordinateRanges(t *testing.T) {
	if _, err := os.Stat("/etc/subuid"); err != nil {
		t.Skip("no /etc/subuid")
	}
	spans := append(readSubordinate("/etc/subuid"), readSubordinate("/etc/subgid")...)
	a := &idAllocator{pool: DefaultIDPool, dir: t.TempDir(), root: t.TempDir()}
	for i := range 4 {
		r, err := a.allocate(string(rune('a'+i)), nil)
		require.NoError(t, err)
		require.False(t, overlaps(spans, uint64(r.HostID), uint64(r.HostID)+uint64(r.Size)), "block %d overlaps a subordinate range", r.HostID)
	}
}

func TestReadSubordinate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "subuid")
	require.NoError(t, os.WriteFile(p, []byte("dockremap:100000:65536\nbad line\nx:y:z\nlxd:1000000:1000000000\n"), 0o644))
	require.Equal(t, []idSpan{{100000, 165536}, {1000000, 1001000000}}, readSubordinate(p))
	require.True(t, overlaps(readSubordinate(p), 165535, 165536))
	require.False(t, overlaps(readSubordinate(p), 165536, 231072))
}

func TestValidateConfig(t *testing.T) {
	ok := &Config{Spec: DefaultSpec("/rootfs", "/bin/true")}
	require.NoError(t, validateConfig("x", ok))
	bad := map[string]func(*Config){
		"relative root":  func(c *Config) { c.Spec.Root.Path = "rootfs" },
		"no args":        func(c *Config) { c.Spec.Process.Args = nil },
		"userns in spec": func(c *Config) { c.Spec.Linux.Namespaces = append(c.Spec.Linux.Namespaces, userNS()) },
		"relative mount": func(c *Config) { c.Spec.Mounts[0].Destination = "proc" },
		"tiny memory": func(c *Config) {
			l := int64(100)
			c.Spec.Linux.Resources.Memory = memory(l)
		},
	}
	for name, mutate := range bad {
		c := &Config{Spec: DefaultSpec("/rootfs", "/bin/true")}
		mutate(c)
		err := validateConfig("x", c)
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", name, err)
		require.Contains(t, err.Error(), `"x"`)
	}
}

// Runtimes on different state directories share the host's one pool: no
// two hand out overlapping blocks, whatever their pool settings.
func TestIDPoolIsHostWide(t *testing.T) {
	host := t.TempDir()
	a := &idAllocator{pool: IDPool{Start: 100000, BlockSize: 65536, Count: 4}, dir: host, root: t.TempDir()}
	b := &idAllocator{pool: IDPool{Start: 100000, BlockSize: 65536, Count: 4}, dir: host, root: t.TempDir()}
	c := &idAllocator{pool: IDPool{Start: 100000 + 32768, BlockSize: 65536, Count: 4}, dir: host, root: t.TempDir()}
	var spans []idSpan
	for _, al := range []*idAllocator{a, b, c, a} {
		r, err := al.allocate("same-id", nil)
		require.NoError(t, err)
		span := idSpan{uint64(r.HostID), uint64(r.HostID) + uint64(r.Size)}
		if al == a && len(spans) == 3 {
			require.Equal(t, spans[0], span, "an owner gets its own block again")
			continue
		}
		require.False(t, overlaps(spans, span.start, span.end), "block %v overlaps one of another root: %v", span, spans)
		spans = append(spans, span)
	}
	// A state directory that is gone gives its blocks back.
	require.NoError(t, os.RemoveAll(b.root))
	d := &idAllocator{pool: IDPool{Start: 100000, BlockSize: 65536, Count: 4}, dir: host, root: t.TempDir()}
	r, err := d.allocate("x", nil)
	require.NoError(t, err)
	require.Equal(t, spans[1].start, uint64(r.HostID))
	// Releasing one root's owner leaves another root's same ID alone.
	require.NoError(t, a.release("same-id"))
	rec, err := c.load()
	require.NoError(t, err)
	require.GreaterOrEqual(t, c.index(rec, "same-id"), 0, "another root's owner of the same ID keeps its block")
	require.Less(t, a.index(rec, "same-id"), 0)
}

// A state directory belongs to the first backend that opens it: another
// is refused before it touches anything there.
func TestStateDirBelongsToOneBackend(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	first := &fakeDriver{created: map[string]*driver.CreateRequest{}}
	rt, err := New(first, WithStateDir(dir), withIDDir(t.TempDir()))
	require.NoError(t, err)
	_, err = rt.Create(ctx, "c1", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"),
		Volumes: []volume.Spec{{Destination: "/scratch", TmpfsSize: 1 << 20}}})
	require.NoError(t, err)
	other := &otherDriver{fakeDriver{created: map[string]*driver.CreateRequest{}}}
	_, err = New(other, WithStateDir(dir), withIDDir(t.TempDir()))
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), "fake")
	recs, err := os.ReadDir(filepath.Join(dir, "volumes", "records"))
	require.NoError(t, err)
	require.Len(t, recs, 1, "the other backend's open detached the first one's volume")
	// The same backend opens it again, by any path to it.
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	_, err = New(first, WithStateDir(link), withIDDir(t.TempDir()))
	require.NoError(t, err)
}

type otherDriver struct{ fakeDriver }

func (o *otherDriver) Name() string { return "other" }
