package image_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
	"github.com/berthrun/berth/internal/fixture"
)

var ctx = context.Background()

func openStore(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "store"))
	require.NoError(t, err)
	return s
}

// busybox is an image of the host's busybox root filesystem plus a small
// layer in each compression.
func busybox(t *testing.T) *Image {
	t.Helper()
	root := fixture.BusyboxTB(t)
	l, err := DirTar(root)
	require.NoError(t, err)
	im := NewImage([][]byte{l, Gzip(Tar(File("etc/motd", "gzip\n"))), Zstd(Tar(File("etc/issue", "zstd\n"), File("etc/.wh.hostname", "")))}, "/bin/sh", "-c", "echo hi")
	im.Tags = []string{"busybox:1"}
	return im
}

func TestImportFormatsAndRoundTrips(t *testing.T) {
	bb := busybox(t)
	archives := map[string][]byte{
		"docker-save": DockerSave(bb),
		"oci":         OCI(bb),
		"oci gzip":    Gzip(OCI(bb)),
		"docker zstd": Zstd(DockerSave(bb)),
	}
	for name, arch := range archives {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			res, err := s.ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"busybox:1"}}})
			require.NoError(t, err)
			require.Len(t, res.Images, 1)
			d := res.Images[0].Digest
			if strings.HasPrefix(name, "oci") {
				assert.Equal(t, digest.FromBytes(bb.Manifest()), d, "an OCI import keeps the manifest digest")
			}
			assert.Equal(t, bb.ConfigDigest(), res.Images[0].Config)
			im, err := s.Get(ctx, "busybox:1")
			require.NoError(t, err)
			assert.Equal(t, []string{"/bin/sh", "-c", "echo hi"}, im.Config().Cmd)
			assert.Equal(t, "amd64", im.Platform().Architecture)
			byCfg, err := s.Get(ctx, bb.ConfigDigest().String())
			require.NoError(t, err)
			assert.Equal(t, d, byCfg.Digest, "the config digest (docker's image ID) names the image too")

			for _, format := range []string{image.FormatDocker, image.FormatOCI} {
				var buf bytes.Buffer
				require.NoError(t, s.Export(ctx, "busybox:1", &buf, image.ExportOptions{Format: format}))
				s2 := openStore(t)
				res2, err := s2.ImportReader(ctx, bytes.NewReader(buf.Bytes()), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"busybox:1"}}})
				require.NoError(t, err, format)
				assert.Equal(t, d, res2.Images[0].Digest, "%s: import(export(x)) keeps the digest", format)
				var again bytes.Buffer
				require.NoError(t, s2.Export(ctx, "busybox:1", &again, image.ExportOptions{Format: format}))
				assert.Equal(t, buf.Bytes(), again.Bytes(), "%s: export is deterministic", format)
				require.NoError(t, validate.Store(s2.Dir()))
			}
			dir := filepath.Join(t.TempDir(), "rootfs")
			_, err = s.Unpack(ctx, "busybox:1", dir, image.UnpackOptions{})
			require.NoError(t, err)
			b, err := os.ReadFile(filepath.Join(dir, "etc/motd"))
			require.NoError(t, err)
			assert.Equal(t, "gzip\n", string(b))
			_, err = os.Stat(filepath.Join(dir, "etc/hostname"))
			assert.True(t, os.IsNotExist(err), "whiteout applied")
			out, err := exec.Command(filepath.Join(dir, "bin/busybox"), "echo", "runs").Output()
			require.NoError(t, err)
			assert.Equal(t, "runs\n", string(out))
			require.NoError(t, validate.Tree(dir, validate.TreeOptions{}))
			require.NoError(t, validate.Store(s.Dir()))
		})
	}
}

func TestImportOCIDirectory(t *testing.T) {
	im := NewImage([][]byte{Gzip(Tar(File("a", "a")))})
	im.Tags = []string{"dir:1"}
	dir := t.TempDir()
	require.NoError(t, WriteDir(dir, OCIEntries(im)...))
	s := openStore(t)
	res, err := s.Import(ctx, dir, image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	assert.Equal(t, digest.FromBytes(im.Manifest()), res.Images[0].Digest)
	assert.Positive(t, res.Read)

	// A blob reached through a symlink is refused.
	evil := t.TempDir()
	require.NoError(t, WriteDir(evil, OCIEntries(im)...))
	blob := filepath.Join(evil, "blobs/sha256", digest.FromBytes(im.Layers[0]).Encoded())
	require.NoError(t, os.Rename(blob, filepath.Join(evil, "elsewhere")))
	require.NoError(t, os.Symlink("../../elsewhere", blob))
	before := validate.Snapshot(t, s.Dir())
	_, err = openStore(t).Import(ctx, evil, image.ImportOptions{})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	assert.Equal(t, before, validate.Snapshot(t, s.Dir()))

	_, err = s.Import(ctx, filepath.Join(dir, "nope"), image.ImportOptions{})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

// TestMultiPlatform: a nested index gives the host's manifest, or the one
// asked for.
func TestMultiPlatform(t *testing.T) {
	amd := NewImage([][]byte{Tar(File("arch", "amd64"))})
	arm := NewImage([][]byte{Tar(File("arch", "arm64"))})
	entries := OCIEntries(amd, arm)
	var idx ocispec.Index
	for _, e := range entries {
		if e.Name == "index.json" {
			require.NoError(t, json.Unmarshal([]byte(e.Body), &idx))
		}
	}
	idx.Manifests[0].Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	idx.Manifests[1].Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	nested, _ := json.Marshal(idx)
	nd := digest.FromBytes(nested)
	top := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: nd, Size: int64(len(nested)),
		Annotations: map[string]string{"io.containerd.image.name": "multi:1"}}}}
	top.SchemaVersion = 2
	tb, _ := json.Marshal(top)
	entries = replaceEntry(entries, "index.json", func(e Entry) Entry { e.Body = string(tb); return e })
	entries = append(entries, File("blobs/sha256/"+nd.Encoded(), string(nested)))
	arch := Tar(entries...)

	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"multi:1"}}})
	require.NoError(t, err)
	require.Len(t, res.Images, 1)
	assert.Equal(t, amd.ConfigDigest(), res.Images[0].Config)
	res, err = openStore(t).ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}})
	require.NoError(t, err)
	assert.Equal(t, arm.ConfigDigest(), res.Images[0].Config)
	_, err = openStore(t).ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

// TestDockerSaveSymlinkedLayer: docker save writes a layer shared by two
// images once and links to it.
func TestDockerSaveSymlinkedLayer(t *testing.T) {
	shared := Tar(File("shared", "s"))
	a := NewImage([][]byte{shared, Tar(File("a", "a"))})
	b := NewImage([][]byte{shared, Tar(File("b", "b"))})
	a.Tags, b.Tags = []string{"a:1"}, []string{"b:1"}
	es := DockerSaveEntries(a, b)
	// Rename the shared layer's file and point a symlink at it, as docker does.
	id := digest.FromBytes(shared).Encoded()
	var out []Entry
	for _, e := range es {
		if e.Name == id+"/layer.tar" {
			out = append(out, File("real/layer.tar", e.Body), Symlink(e.Name, "../real/layer.tar"))
			continue
		}
		out = append(out, e)
	}
	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(Tar(out...)), image.ImportOptions{Tags: image.TagPolicy{Prefix: "p"}})
	require.NoError(t, err)
	assert.Len(t, res.Images, 2)
	require.NoError(t, validate.Store(s.Dir()))
	_, err = s.Get(ctx, "p/b:1")
	require.NoError(t, err)
}

func TestRemoveAndGC(t *testing.T) {
	s := openStore(t)
	shared := Tar(File("shared", "s"))
	a := NewImage([][]byte{shared, Tar(File("a", "a"))})
	b := NewImage([][]byte{shared})
	a.Tags, b.Tags = []string{"a:1", "a:2"}, []string{"b:1"}
	_, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(a, b)), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"a:1", "a:2", "b:1"}}})
	require.NoError(t, err)
	res, err := s.Remove(ctx, "a:1")
	require.NoError(t, err)
	assert.Equal(t, []string{"a:1"}, res.Untagged)
	assert.Empty(t, res.Deleted, "a:2 still names it")
	res, err = s.Remove(ctx, "a:2")
	require.NoError(t, err)
	assert.NotEmpty(t, res.Deleted)
	require.NoError(t, validate.Store(s.Dir()), "a's own layer went, the shared one stayed")
	_, err = os.Stat(filepath.Join(s.Dir(), "blobs/sha256", digest.FromBytes(shared).Encoded()))
	require.NoError(t, err)
	_, err = s.Remove(ctx, "a:1")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	_, err = s.Remove(ctx, list[0].Digest.String())
	require.NoError(t, err)
	require.NoError(t, validate.Store(s.Dir()))
	blobs, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs/sha256"))
	assert.Empty(t, blobs)
}

func TestRotDetected(t *testing.T) {
	s := openStore(t)
	im := NewImage([][]byte{Tar(File("a", strings.Repeat("a", 4096)))})
	im.Tags = []string{"rot:1"}
	// Unpack reads the blobs (TestFreshTreeRot has the import's tree).
	_, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}, NoRootfs: true})
	require.NoError(t, err)
	blob := filepath.Join(s.Dir(), "blobs/sha256", digest.FromBytes(im.Layers[0]).Encoded())
	require.NoError(t, os.Chmod(blob, 0o644))
	f, err := os.OpenFile(blob, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("b"), 2000)
	require.NoError(t, err)
	f.Close()
	dir := filepath.Join(t.TempDir(), "r")
	_, err = s.Unpack(ctx, "rot:1", dir, image.UnpackOptions{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	_, serr := os.Stat(dir)
	assert.True(t, os.IsNotExist(serr))
	err = s.Export(ctx, "rot:1", io.Discard, image.ExportOptions{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
}

func TestUnpackTargets(t *testing.T) {
	s := openStore(t)
	im := NewImage([][]byte{Tar(File("a", "a"))})
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{})
	require.NoError(t, err)
	d := res.Images[0].Digest.String()
	existing := t.TempDir()
	_, err = s.Unpack(ctx, d, existing, image.UnpackOptions{})
	assert.True(t, errdefs.IsAlreadyExists(err), "%v", err)
	_, err = s.Unpack(ctx, "nope:1", filepath.Join(existing, "x"), image.UnpackOptions{})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = s.Unpack(ctx, "NOT A REF", filepath.Join(existing, "x"), image.UnpackOptions{})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

func TestUnpackExt4(t *testing.T) {
	fixture.RequireRoot(t)
	_, err := exec.LookPath("debugfs")
	fixture.Require(t, err == nil, "needs debugfs (e2fsprogs, installed by scripts/setup.sh)")
	s := openStore(t)
	bb := busybox(t)
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(bb)), image.ImportOptions{Tags: image.TagPolicy{Expect: bb.Tags}})
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "root.ext4")
	_, err = s.UnpackExt4(ctx, "busybox:1", file, 0, image.UnpackOptions{})
	require.NoError(t, err)
	// Read back without mounting anything.
	out, err := exec.Command("debugfs", "-R", "cat /etc/motd", file).Output()
	require.NoError(t, err)
	assert.Equal(t, "gzip\n", string(out))
	out, err = exec.Command("debugfs", "-R", "stat /bin/busybox", file).CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(out), "Type: regular")
	_, err = s.UnpackExt4(ctx, "busybox:1", file, 0, image.UnpackOptions{})
	assert.True(t, errdefs.IsAlreadyExists(err), "%v", err)
	small := filepath.Join(t.TempDir(), "small.ext4")
	_, err = s.UnpackExt4(ctx, "busybox:1", small, 1<<20, image.UnpackOptions{})
	assert.Error(t, err, "too small")
	_, serr := os.Stat(small)
	assert.True(t, os.IsNotExist(serr), "a failed build removes its file")
	blobs := filepath.Join(s.Dir(), "ingest")
	left, _ := os.ReadDir(blobs)
	assert.Empty(t, left, "the staging tree is gone")
}

func TestRootfsSharedAndCollected(t *testing.T) {
	s := openStore(t)
	bb := busybox(t)
	_, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(bb)), image.ImportOptions{Tags: image.TagPolicy{Expect: bb.Tags}})
	require.NoError(t, err)
	var wg sync.WaitGroup
	dirs := make([]string, 6)
	errs := make([]error, 6)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = s.Rootfs(ctx, "busybox:1", image.RootfsOptions{Holder: fmt.Sprintf("c%d", i)})
		}()
	}
	wg.Wait()
	for i := range dirs {
		require.NoError(t, errs[i])
		assert.Equal(t, dirs[0], dirs[i], "one tree for the image")
	}
	ents, _ := os.ReadDir(filepath.Dir(dirs[0]))
	for _, e := range ents {
		assert.False(t, strings.HasPrefix(e.Name(), ".tmp-"), "no unpack left in progress: %s", e.Name())
	}
	_, err = os.Stat(filepath.Join(dirs[0], "bin/busybox"))
	require.NoError(t, err)
	_, err = s.Rootfs(ctx, "busybox:1", image.RootfsOptions{Holder: "bad/holder"})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)

	_, err = s.Remove(ctx, "busybox:1")
	require.NoError(t, err)
	for i := range 3 {
		require.NoError(t, s.ReleaseRootfs(ctx, fmt.Sprintf("c%d", i)))
		_, err = os.Stat(dirs[0])
		require.NoError(t, err, "held by c5: kept though its image is gone")
	}
	require.NoError(t, s.ReleaseRootfs(ctx, "c3", "c4"))
	_, err = os.Stat(dirs[0])
	require.NoError(t, err, "held by c5: kept though its image is gone")
	require.NoError(t, s.ReleaseRootfs(ctx, "no/such", "c5", "unknown"), "several at once, names no holder has among them")
	_, err = os.Stat(dirs[0])
	assert.True(t, os.IsNotExist(err), "last holder gone: tree collected")
	require.NoError(t, s.ReleaseRootfs(ctx, "c5"), "releasing twice is fine")

	// Without holders, a tree lives as long as its image.
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(bb)), image.ImportOptions{Tags: image.TagPolicy{Expect: bb.Tags}})
	require.NoError(t, err)
	dir, err := s.Rootfs(ctx, "busybox:1", image.RootfsOptions{})
	require.NoError(t, err)
	_, err = s.Remove(ctx, "busybox:1")
	require.NoError(t, err)
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err))
}

func TestConcurrentImports(t *testing.T) {
	s := openStore(t)
	shared := Tar(File("shared", strings.Repeat("s", 100000)))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			im := NewImage([][]byte{shared, Tar(File("own", fmt.Sprint(i)))})
			im.Tags = []string{fmt.Sprintf("img:%d", i), "common:1"}
			_, errs[i] = s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags[:1]}})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	list, err := s.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 8)
	require.NoError(t, validate.Store(s.Dir()))
}

// The helper process imports for TestMultiProcessImports and
// TestKilledImport, or, with BERTH_ROOTFS, prints the tree Rootfs gives
// (of a store opened WithSetidRootfs when BERTH_SETID is set).
func TestHelperProcess(t *testing.T) {
	if os.Getenv("BERTH_IMAGE_HELPER") == "" {
		t.Skip("helper process")
	}
	var opts []image.Option
	if os.Getenv("BERTH_SETID") != "" {
		opts = append(opts, image.WithSetidRootfs())
	}
	s, err := image.Open(os.Getenv("BERTH_STORE"), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if ref := os.Getenv("BERTH_ROOTFS"); ref != "" {
		tree, err := s.Rootfs(ctx, ref, image.RootfsOptions{Holder: os.Getenv("BERTH_HOLDER")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		fmt.Println(tree)
		os.Exit(0)
	}
	var r io.Reader = os.Stdin
	if p := os.Getenv("BERTH_ARCHIVE"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			os.Exit(3)
		}
		r = f
	}
	_, err = s.ImportReader(ctx, r, image.ImportOptions{Tags: image.TagPolicy{Prefix: os.Getenv("BERTH_PREFIX")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	os.Exit(0)
}

func helper(t *testing.T, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), append([]string{"BERTH_IMAGE_HELPER=1"}, env...)...)
	return cmd
}

func TestMultiProcessImports(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	shared := Tar(File("shared", strings.Repeat("s", 1<<20)))
	var cmds []*exec.Cmd
	for i := range 4 {
		im := NewImage([][]byte{shared, Tar(File("own", fmt.Sprint(i)))})
		im.Tags = []string{"img:1"}
		p := filepath.Join(t.TempDir(), "a.tar")
		require.NoError(t, os.WriteFile(p, DockerSave(im), 0o644))
		cmd := helper(t, "BERTH_STORE="+dir, "BERTH_ARCHIVE="+p, fmt.Sprintf("BERTH_PREFIX=p%d", i))
		require.NoError(t, cmd.Start())
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		require.NoError(t, c.Wait())
	}
	s, err := image.Open(dir)
	require.NoError(t, err)
	for i := range 4 {
		_, err := s.Get(ctx, fmt.Sprintf("p%d/img:1", i))
		require.NoError(t, err)
	}
	require.NoError(t, validate.Store(dir))
}

// TestKilledImport kills an import half-way through its archive: the next
// Open finds the store as it was.
func TestKilledImport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := image.Open(dir)
	require.NoError(t, err)
	prior := NewImage([][]byte{Tar(File("p", "p"))})
	prior.Tags = []string{"prior:1"}
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(prior)), image.ImportOptions{Tags: image.TagPolicy{Expect: prior.Tags}})
	require.NoError(t, err)
	before := validate.Snapshot(t, dir)

	im := NewImage([][]byte{Tar(File("big", strings.Repeat("x", 8<<20)))})
	arch := DockerSave(im)
	cmd := helper(t, "BERTH_STORE="+dir, "BERTH_PREFIX=k")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	_, err = stdin.Write(arch[:len(arch)/2])
	require.NoError(t, err)
	// Wait until the import has staged part of the layer.
	deadline := time.Now().Add(10 * time.Second)
	for staged := false; !staged && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ents, _ := os.ReadDir(filepath.Join(dir, "ingest"))
		for _, e := range ents {
			files, _ := os.ReadDir(filepath.Join(dir, "ingest", e.Name()))
			staged = staged || len(files) > 0
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	assert.NotEqual(t, before, validate.Snapshot(t, dir), "the killed import left its staging behind")

	s, err = image.Open(dir)
	require.NoError(t, err)
	assert.Equal(t, before, validate.Snapshot(t, dir), "Open cleaned up: the store is as it was")
	require.NoError(t, validate.Store(dir))

	// A commit killed after placing a blob but before store.json: the
	// orphan blob goes at the next Open.
	orphan := filepath.Join(dir, "blobs/sha256", strings.Repeat("ab", 32))
	require.NoError(t, os.WriteFile(orphan, []byte("orphan"), 0o444))
	_, err = image.Open(dir)
	require.NoError(t, err)
	assert.Equal(t, before, validate.Snapshot(t, dir))
}

// A Get that races a Remove of the same image finds it or not: never
// damaged (the removal took its blobs between the two reads).
func TestGetDuringRemoveIsNotFound(t *testing.T) {
	s := openStore(t)
	for i := range 20 {
		im := NewImage([][]byte{Tar(File("f", fmt.Sprint(i)))}, "/bin/true")
		im.Tags = []string{"race:1"}
		res, err := s.ImportReader(ctx, bytes.NewReader(OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
		require.NoError(t, err)
		id := res.Images[0].Config.String()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					if _, err := s.Get(ctx, id); err != nil {
						assert.True(t, errdefs.IsNotFound(err), "%v", err)
						return
					}
				}
			}()
		}
		_, err = s.Remove(ctx, "race:1")
		require.NoError(t, err)
		wg.Wait()
	}
}
