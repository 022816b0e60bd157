package runtimetest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

// testColdMove: a stopped container leaves one runtime (state directory)
// through Export and comes back on another through Import with its tree;
// a running one is refused. Backends without root disks refuse both with
// not-implemented.
func testColdMove(t *testing.T, h Harness) {
	ctx := testContext(t)
	src := h.Open(t)
	id := NewID("move")
	if !src.Capabilities().RootDisk {
		c := create(t, src, id, h.Config(t, "/bin/true"))
		require.Truef(t, isNotImplemented(c.Export(ctx, filepath.Join(t.TempDir(), "x"))), "export without root disks")
		_, err := src.Import(ctx, NewID("imp"), t.TempDir(), runtime.ImportOptions{})
		require.Truef(t, isNotImplemented(err), "import without root disks: %v", err)
		return
	}
	dst := h.Open(t)
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "cat /moved 2>/dev/null || echo fresh; echo kept > /moved; mkdir -p /tree/a; echo deep > /tree/a/b")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	cfg.Labels = map[string]string{"moved": "yes"}
	cfg.DiskSize = 320 << 20 // small copies (xfs needs 300 MiB): RootDisk measures the host's free space
	c := create(t, src, id, cfg)
	require.NoError(t, c.Start(ctx))
	_, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, "fresh\n", out.String())

	dir := filepath.Join(t.TempDir(), "moving")
	require.NoError(t, c.Export(ctx, dir))
	require.Truef(t, isAlreadyExists(c.Export(ctx, dir)), "a second export does not replace the first")
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, src, id, nil)

	out = newBuffer()
	c2, err := dst.Import(ctx, id, dir, runtime.ImportOptions{IO: runtime.IO{Stdout: out, Stderr: out}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c2.Delete(ctx, runtime.DeleteOptions{Force: true}) })
	_, err = os.Lstat(filepath.Join(dir, "disk.img"))
	require.True(t, os.IsNotExist(err), "the disk moved into the runtime")
	info, err := c2.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, "yes", info.Labels["moved"])
	require.NoError(t, c2.Start(ctx))
	_, err = c2.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, "kept\n", out.String(), "the tree came along")
	_, err = dst.Import(ctx, NewID("again"), dir, runtime.ImportOptions{})
	require.Truef(t, isInvalidArgument(err), "the disk is gone from the directory: %v", err)
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, dst, id, nil)

	busy := create(t, src, NewID("busy"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, busy.Start(ctx))
	err = busy.Export(ctx, filepath.Join(t.TempDir(), "busy"))
	require.Truef(t, isFailedPrecondition(err), "export of a running container: %v", err)
}

// testImportHostile: an export directory whose config or disk is not a
// regular file of the directory itself is refused with invalid-argument,
// and the importing runtime keeps nothing of it.
func testImportHostile(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().RootDisk {
		// The capability is checked before anything in the directory.
		dir := t.TempDir()
		require.NoError(t, syscall.Mkfifo(filepath.Join(dir, runtime.ExportConfigFile), 0o600))
		_, err := rt.Import(ctx, NewID("hostile"), dir, runtime.ImportOptions{})
		require.Truef(t, isNotImplemented(err), "import without root disks: %v", err)
		return
	}
	cfg := h.Config(t, "/bin/true")
	cfg.DiskSize = 320 << 20 // small copies, as in ColdMove
	c := create(t, rt, NewID("hostsrc"), cfg)
	good := filepath.Join(t.TempDir(), "good")
	require.NoError(t, c.Export(ctx, good))
	goodConfig, goodDisk := filepath.Join(good, runtime.ExportConfigFile), filepath.Join(good, "disk.img")
	config, err := os.ReadFile(goodConfig)
	require.NoError(t, err)
	for _, tc := range hostileExports(t, goodConfig, goodDisk, config) {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hostile")
			require.NoError(t, os.Mkdir(dir, 0o700))
			tc.make(dir)
			id := NewID("hostile")
			imported, err := rt.Import(ctx, id, dir, runtime.ImportOptions{})
			require.Truef(t, isInvalidArgument(err), "import of %s: %v", tc.name, err)
			require.Nil(t, imported)
			requireGone(t, h, rt, id, nil)
			_, err = os.Stat(goodDisk)
			require.NoError(t, err, "the disk the hostile export pointed at is untouched")
		})
	}
}

// hostileExport makes, in an empty directory, an export Import must refuse.
type hostileExport struct {
	name string
	make func(dir string)
}

// hostileExports are testImportHostile's cases: links and FIFOs in place of
// the config or disk, and configs naming a disk outside the directory;
// goodConfig, goodDisk and config are a real export's files and config.
func hostileExports(t *testing.T, goodConfig, goodDisk string, config []byte) []hostileExport {
	withDisk := func(name string) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(config, &m))
		m["disk"] = name
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	withMount := func(m specs.Mount) []byte {
		var exp map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(config, &exp))
		var spec specs.Spec
		require.NoError(t, json.Unmarshal(exp["spec"], &spec))
		spec.Mounts = append(spec.Mounts, m)
		var err error
		exp["spec"], err = json.Marshal(&spec)
		require.NoError(t, err)
		b, err := json.Marshal(exp)
		require.NoError(t, err)
		return b
	}
	// linkDisk gives dir a real disk (another name of the good one), so
	// that only the config can be refused.
	linkDisk := func(dir string) {
		require.NoError(t, os.Link(goodDisk, filepath.Join(dir, "disk.img")))
	}
	return []hostileExport{
		{"config symlink", func(dir string) {
			require.NoError(t, os.Symlink(goodConfig, filepath.Join(dir, runtime.ExportConfigFile)))
		}},
		{"config FIFO", func(dir string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(dir, runtime.ExportConfigFile), 0o600))
		}},
		{"disk symlink", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), config, 0o600))
			require.NoError(t, os.Symlink(goodDisk, filepath.Join(dir, "disk.img")))
		}},
		{"disk FIFO", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), config, 0o600))
			require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "disk.img"), 0o600))
		}},
		{"disk outside", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), withDisk(goodDisk), 0o600))
		}},
		{"disk up", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), withDisk("../good/disk.img"), 0o600))
		}},
		{"disk dotdot", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), withDisk(".."), 0o600))
		}},
		// The spec of an export never binds host paths (Export drops
		// every bind with the volumes): one that does was crafted, and
		// would hand the container the host's files.
		{"config binds the host root", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), withMount(specs.Mount{
				Destination: "/host", Type: "bind", Source: "/", Options: []string{"rbind", "rw"},
			}), 0o600))
			linkDisk(dir)
		}},
		{"config binds by option", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, runtime.ExportConfigFile), withMount(specs.Mount{
				Destination: "/etc-host", Type: "none", Source: "/etc", Options: []string{"bind"},
			}), 0o600))
			linkDisk(dir)
		}},
	}
}
