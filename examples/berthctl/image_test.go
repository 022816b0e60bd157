package main

import (
	"archive/tar"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
	"github.com/berthrun/berth/internal/fixture"
)

// imageCtl runs berthctl on a state root of its own.
type imageCtl struct {
	t    *testing.T
	root string
}

func newImageCtl(t *testing.T) *imageCtl {
	return &imageCtl{t: t, root: filepath.Join(t.TempDir(), "state")}
}

func (c *imageCtl) run(args ...string) result {
	c.t.Helper()
	return invoke(c.t, "", append([]string{"--root", c.root, "image"}, args...)...)
}

func (c *imageCtl) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	require.Equal(c.t, 0, r.code, "berthctl image %v: stderr %q", args, r.stderr)
	assert.Empty(c.t, r.stderr, "no progress output when stderr is not a terminal")
	return r.stdout
}

// archive writes an image archive with tags to a file.
func archive(t *testing.T, body string, oci bool, tags ...string) string {
	t.Helper()
	im := NewImage([][]byte{Tar(Dir("etc/"), File("etc/motd", body))}, "/bin/sh")
	im.Tags = tags
	b := DockerSave(im)
	if oci {
		b = OCI(im)
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

var digestLine = regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`)

func TestImageImportTagPolicy(t *testing.T) {
	c := newImageCtl(t)
	a := archive(t, "a", false, "busybox:1", "ubuntu:latest")

	out := c.ok("import", a)
	assert.Regexp(t, digestLine, out, "no tag asked for: the digest alone")
	d := strings.TrimSpace(out)
	assert.Contains(t, c.ok("ls"), "<none>")

	assert.Equal(t, "busybox:1 "+d+"\n", c.ok("import", "--expect-tag", "busybox:1", a))
	assert.Equal(t, "tenant-a/busybox:1 "+d+"\ntenant-a/ubuntu:latest "+d+"\n", c.ok("import", "--tag-prefix", "tenant-a", a))
	requireFailure(t, c.run("import", "--expect-tag", "debian:12", a), "invalid-argument")

	// Another image claiming ubuntu:latest cannot take it...
	c.ok("import", "--expect-tag", "ubuntu", a)
	b := archive(t, "b", true, "ubuntu:latest")
	before := validate.Snapshot(t, filepath.Join(c.root, "images"))
	requireFailure(t, c.run("import", "--expect-tag", "ubuntu:latest", b), "already-exists")
	assert.Equal(t, before, validate.Snapshot(t, filepath.Join(c.root, "images")), "a refused import changes nothing")
	// ...unless told to.
	out = c.ok("import", "--expect-tag", "ubuntu:latest", "--allow-retag", b)
	assert.Regexp(t, `^ubuntu:latest sha256:[0-9a-f]{64}\n$`, out)
	assert.NotContains(t, out, d)

	ls := c.ok("ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	assert.Equal(t, []string{"REFERENCE", "DIGEST", "SIZE", "IMPORTED"}, strings.Fields(lines[0]))
	assert.Len(t, lines, 5, ls)
	assert.Len(t, strings.Fields(c.ok("ls", "-q")), 2)
}

func TestImageExportUnpackRm(t *testing.T) {
	c := newImageCtl(t)
	a := archive(t, "hello\n", false, "app:1")
	out := c.ok("import", "--expect-tag", "app:1", a)
	d := strings.Fields(out)[1]

	for _, format := range []string{"docker", "oci"} {
		f := filepath.Join(t.TempDir(), format+".tar")
		assert.Empty(t, c.ok("export", "--format", format, "app:1", f))
		other := newImageCtl(t)
		assert.Equal(t, "app:1 "+d+"\n", other.ok("import", "--expect-tag", "app:1", f), "%s round trip keeps the digest", format)
	}
	stdout := c.ok("export", "app:1", "-")
	tr := tar.NewReader(strings.NewReader(stdout))
	var names []string
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names = append(names, h.Name)
	}
	assert.Contains(t, names, "manifest.json")
	requireFailure(t, c.run("export", "--format", "zip", "app:1", filepath.Join(t.TempDir(), "x")), "invalid-argument")

	dir := filepath.Join(t.TempDir(), "rootfs")
	assert.Empty(t, c.ok("unpack", "app:1", dir))
	b, err := os.ReadFile(filepath.Join(dir, "etc/motd"))
	require.NoError(t, err)
	assert.Equal(t, "hello\n", string(b))
	requireFailure(t, c.run("unpack", "app:1", dir), "already-exists")

	assert.Equal(t, "untagged app:1\ndeleted "+d+"\n", c.ok("rm", "app:1"))
	requireFailure(t, c.run("rm", "app:1"), "not-found")
	requireFailure(t, c.run("unpack", "app:1", filepath.Join(t.TempDir(), "x")), "not-found")
	assert.Equal(t, "REFERENCE   DIGEST   SIZE   IMPORTED\n", c.ok("ls"))
}

// import unpacks the image's tree for the first unpack to take;
// --no-rootfs keeps the image only; both unpack the same tree.
func TestImageImportNoRootfs(t *testing.T) {
	a := archive(t, "hello\n", false, "app:1")
	var trees []string
	for _, flags := range [][]string{nil, {"--no-rootfs"}} {
		c := newImageCtl(t)
		c.ok(append(append([]string{"import"}, flags...), a)...)
		fresh, err := filepath.Glob(filepath.Join(c.root, "images", "rootfs", ".fresh-*"))
		require.NoError(t, err)
		assert.Len(t, fresh, 1-len(flags), "flags %v", flags)
		dir := filepath.Join(t.TempDir(), "rootfs")
		c.ok("unpack", strings.Fields(c.ok("ls", "-q"))[0], dir)
		trees = append(trees, validate.Snapshot(t, dir))
		require.NoError(t, validate.Store(filepath.Join(c.root, "images")))
	}
	assert.Equal(t, trees[0], trees[1])
}

func TestImageHostileArchive(t *testing.T) {
	c := newImageCtl(t)
	c.ok("import", archive(t, "x", false)) // the store exists
	store := filepath.Join(c.root, "images")
	before := validate.Snapshot(t, store)
	for name, b := range map[string][]byte{
		"traversal": DockerSave(NewImage([][]byte{Tar(File("../../etc/evil", "x"))})),
		"bomb":      DockerSave(NewImage([][]byte{GzipBomb(Tar(Entry{Name: "z", Size: 256 << 20}), 256<<20+1024)})),
		"truncated": DockerSave(NewImage([][]byte{Tar(File("a", "b"))}))[:3000],
	} {
		p := filepath.Join(t.TempDir(), name+".tar")
		require.NoError(t, os.WriteFile(p, b, 0o644))
		r := c.run("import", "--tag-prefix", "t", p)
		class := "invalid-argument"
		if name == "bomb" {
			class = "resource-exhausted"
		}
		requireFailure(t, r, class)
		assert.Contains(t, r.stderr, p, "the message names the archive")
		assert.Equal(t, before, validate.Snapshot(t, store), name)
	}
	requireFailure(t, c.run("import", filepath.Join(t.TempDir(), "missing.tar")), "not-found")
}

func TestImageUsage(t *testing.T) {
	c := newImageCtl(t)
	requireFailure(t, c.run(), "invalid-argument")
	requireFailure(t, c.run("frobnicate"), "invalid-argument")
	requireFailure(t, c.run("import"), "invalid-argument")
	requireFailure(t, c.run("import", "a", "b"), "invalid-argument")
	requireFailure(t, c.run("export", "x"), "invalid-argument")
	requireFailure(t, c.run("push"), "invalid-argument")
	requireFailure(t, c.run("push", "a", "b", "c"), "invalid-argument")
	requireFailure(t, c.run("push", "--glance", "http://127.0.0.1:9", "a", "b"), "invalid-argument")
	requireFailure(t, c.run("push", "x"), "not-found")
	requireFailure(t, c.run("pull"), "invalid-argument")
	requireFailure(t, c.run("pull", "a", "b"), "invalid-argument")
	requireFailure(t, c.run("tag", "a"), "invalid-argument")
	requireFailure(t, c.run("import", "--tag-prefix", "BAD", archive(t, "x", false)), "invalid-argument")
	r := c.run("-h")
	require.Equal(t, 0, r.code)
	for _, sub := range []string{"import", "ls", "rm", "export", "unpack", "tag", "push", "pull"} {
		assert.Contains(t, r.stdout, "  "+sub+" ")
	}
	r = c.run("import", "-h")
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "--expect-tag REF")
	r = c.run("pull", "-h")
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "usage: berthctl image pull [--tag REF] REF | --glance URL [--tag REF] ID")
	assert.Contains(t, r.stdout, "-glance URL")
	assert.NotContains(t, r.stdout, "-insecure-registry", "the global flags are berthctl help's")
	r = invoke(t, "", "help")
	assert.Contains(t, r.stdout, "--insecure-registry HOST[:PORT]")
	assert.Contains(t, r.stdout, "--registry-mirror HOST=URL")
	assert.Contains(t, invoke(t, "", "help").stdout, "image")
}

// glanceURL is the real Glance scripts/setup-glance.sh starts, or a skip
// (a failure under CI=true).
func glanceURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("BERTH_GLANCE_URL")
	if u == "" {
		u = "http://127.0.0.1:9292"
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(u + "/versions")
	if err == nil {
		resp.Body.Close()
	}
	fixture.Require(t, err == nil, fmt.Sprintf("needs glance-api at %s (scripts/setup-glance.sh starts it): %v", u, err))
	return u
}

func TestImageGlance(t *testing.T) {
	u := glanceURL(t)
	c := newImageCtl(t)
	out := c.ok("import", "--expect-tag", "app:1", archive(t, "to glance", true, "app:1"))
	d := strings.Fields(out)[1]
	id := strings.TrimSpace(c.ok("push", "--glance", u, "app:1"))
	require.Regexp(t, `^[0-9a-f-]{36}$`, id)
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, u+"/v2/images/"+id, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	other := newImageCtl(t)
	assert.Equal(t, "pulled:1 "+d+"\n", other.ok("pull", "--glance", u, "--tag", "pulled:1", id), "same digest back from Glance")
	assert.Equal(t, d+"\n", newImageCtl(t).ok("pull", "--glance", u, id), "without --tag: the digest alone")
	requireFailure(t, other.run("pull", "--glance", u, "00000000-0000-0000-0000-000000000000"), "not-found")
	requireFailure(t, other.run("push", "--glance", u, "nope:1"), "not-found")
}

// TestImageImportStdin: "-" reads the archive from standard input, with
// the same result as the file.
func TestImageImportStdin(t *testing.T) {
	c := newImageCtl(t)
	a := archive(t, "from stdin", false, "busybox:1")
	b, err := os.ReadFile(a)
	require.NoError(t, err)
	r := invoke(t, string(b), "--root", c.root, "image", "import", "--expect-tag", "busybox:1", "-")
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Regexp(t, `^busybox:1 sha256:[0-9a-f]{64}\n$`, r.stdout)
	assert.Equal(t, r.stdout, c.ok("import", "--expect-tag", "busybox:1", a), "the same image as from the file")

	// Not an archive on stdin: refused, nothing imported.
	r = invoke(t, "not a tar archive", "--root", c.root, "image", "import", "-")
	requireFailure(t, r, "invalid-argument")
	assert.Len(t, strings.Fields(c.ok("ls", "-q")), 1)
}

// TestInterleaved: an image subcommand's flags may come before, between
// or after its positional arguments; "--" ends them and "-" is an
// argument.
func TestInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pos       []string
		tag       string
		force     bool
		expect    []string
		parseFail bool
	}{
		{args: []string{"--tag", "x", "ref"}, pos: []string{"ref"}, tag: "x"},
		{args: []string{"ref", "--tag", "x"}, pos: []string{"ref"}, tag: "x"},
		{args: []string{"ref", "--tag=x", "--force"}, pos: []string{"ref"}, tag: "x", force: true},
		{args: []string{"a", "-force", "b"}, pos: []string{"a", "b"}, force: true},
		{args: []string{"-", "--expect-tag", "a:1", "--expect-tag=b:2"}, pos: []string{"-"}, expect: []string{"a:1", "b:2"}},
		{args: []string{"--force", "--", "--tag", "x", "-"}, pos: []string{"--tag", "x", "-"}, force: true},
		{args: []string{"a", "--", "--force"}, pos: []string{"a", "--force"}},
		{args: []string{"--tag", "--", "a"}, pos: []string{"a"}, tag: "--"},
		{args: []string{"a", "--tag"}, parseFail: true},
		{args: []string{"a", "--bogus", "b"}, parseFail: true},
		{args: []string{"a", "--force=maybe"}, parseFail: true},
		{args: nil, pos: []string{}},
	} {
		fs := newFlagSet("test")
		tag := fs.String("tag", "", "")
		force := fs.Bool("force", false, "")
		var expect stringList
		fs.Var(&expect, "expect-tag", "")
		err := fs.Parse(interleaved(fs, tc.args))
		if tc.parseFail {
			assert.Error(t, err, "%q", tc.args)
			continue
		}
		require.NoError(t, err, "%q", tc.args)
		assert.Equal(t, tc.pos, fs.Args(), "%q", tc.args)
		assert.Equal(t, tc.tag, *tag, "%q", tc.args)
		assert.Equal(t, tc.force, *force, "%q", tc.args)
		assert.Equal(t, tc.expect, []string(expect), "%q", tc.args)
	}
}

// TestImageFlagsAfterArguments runs image subcommands with their flags
// after the positional arguments, and with "--".
func TestImageFlagsAfterArguments(t *testing.T) {
	c := newImageCtl(t)
	a := archive(t, "order", false, "app:1")
	out := c.ok("import", a, "--expect-tag", "app:1")
	assert.Regexp(t, `^app:1 sha256:[0-9a-f]{64}\n$`, out)
	assert.Equal(t, out, c.ok("import", "--expect-tag", "app:1", a), "the same either way")
	assert.Regexp(t, digestLine, c.ok("ls", "-q"))
	d := strings.TrimSpace(c.ok("ls", "-q"))
	assert.Equal(t, d+"\n", c.ok("ls", "-q", "--root", c.root), "a global flag after the command's own")
	f := filepath.Join(t.TempDir(), "x.tar")
	assert.Empty(t, c.ok("export", "app:1", f, "--format", "oci"))
	assert.Equal(t, "app:1 "+d+"\n", newImageCtl(t).ok("import", f, "--expect-tag=app:1"))
	// After "--", a flag is an argument.
	r := c.run("rm", "--", "--format")
	requireFailure(t, r, "invalid-argument")
	assert.NotContains(t, r.stderr, "flag provided but not defined")
	r = c.run("rm", "app:1", "--format")
	requireFailure(t, r, "invalid-argument")
	assert.Contains(t, r.stderr, "flag provided but not defined")
	assert.Equal(t, "untagged app:1\ndeleted "+d+"\n", c.ok("rm", "--", "app:1"))
}

// imported imports an image tagged ref into c and returns its digest.
func (c *imageCtl) imported(body, ref string) string {
	c.t.Helper()
	out := c.ok("import", "--expect-tag", ref, archive(c.t, body, true, ref))
	f := strings.Fields(out)
	require.Len(c.t, f, 2, out)
	return f[1]
}

// lsRow matches image ls's row of ref.
func lsRow(ref, digest string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(ref) + ` +` + regexp.QuoteMeta(digest) + ` `)
}

func TestImageTag(t *testing.T) {
	c := newImageCtl(t)
	d := c.imported("a", "app:1")
	e := c.imported("b", "other:1")

	assert.Equal(t, "app:latest "+d+"\n", c.ok("tag", "app:1", "app"))
	assert.Equal(t, "byid:1 "+d+"\n", c.ok("tag", d, "byid:1"), "by digest")
	assert.Equal(t, "app:latest "+d+"\n", c.ok("tag", "app:1", "app:latest"), "the same image: nothing to move")

	// Never moved without --force.
	r := c.run("tag", "other:1", "app:latest")
	requireFailure(t, r, "already-exists")
	assert.Regexp(t, lsRow("app:latest", d), c.ok("ls"))
	assert.Equal(t, "app:latest "+e+"\n", c.ok("tag", "other:1", "app:latest", "--force"))
	assert.Regexp(t, lsRow("app:latest", e), c.ok("ls"))
	assert.Equal(t, "app:latest "+d+"\n", c.ok("tag", "--force", "app:1", "app:latest"))

	requireFailure(t, c.run("tag", "nope:1", "x:1"), "not-found")
	requireFailure(t, c.run("tag", "app:1", "BAD"), "invalid-argument")
	requireFailure(t, c.run("tag", "app:1", "x@"+d), "invalid-argument")
	requireFailure(t, c.run("tag", "app:1"), "invalid-argument")
}
