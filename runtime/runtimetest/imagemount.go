package runtimetest

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/runtime"
)

// importDataImage imports an image of a few files (no command) into the
// runtime's store and returns its name: /data/hello, /data/owned (uid
// 1000), /link (to /data, absolute), /escape (to ../../../../etc,
// which resolves in the tree, where there is no /etc) and /fifo.
func importDataImage(t *testing.T, rt *runtime.Runtime) string {
	t.Helper()
	layer := imagetest.Tar(
		imagetest.Dir("data"),
		imagetest.File("data/hello", "from-image\n"),
		imagetest.Entry{Name: "data/owned", Body: "mine\n", UID: 1000, GID: 1000},
		imagetest.Symlink("link", "/data"),
		imagetest.Symlink("escape", "../../../../etc"),
		imagetest.Entry{Name: "fifo", Type: tar.TypeFifo, Mode: 0o644},
	)
	name := "berth-test/data:" + NewID("img")
	archive := imagetest.DockerSave(imagetest.NewImage([][]byte{layer}))
	_, err := rt.Images().ImportReader(testContext(t), bytes.NewReader(archive), image.ImportOptions{Tags: image.TagPolicy{Name: name}})
	require.NoError(t, err)
	return name
}

// An image mounted in a container is there read-only, nosuid and nodev, a
// sub path of it alone where one is asked for; the tenant's writes never
// reach the store's tree, which the container holds until it is deleted,
// even once the image is removed. Refused mounts (an unknown image, a sub
// path leading out of the image or missing) leave nothing, holds included.
func testImageMount(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if rt.Images() == nil {
		t.Skip("the harness opened the runtime without an image store")
	}
	ref := importDataImage(t, rt)
	tree, err := rt.Images().Rootfs(ctx, ref, image.RootfsOptions{})
	require.NoError(t, err)

	refused := []struct {
		name  string
		mount runtime.ImageMount
		class func(error) bool
	}{
		{"unknown image", runtime.ImageMount{Image: "berth-test/missing:nothere", Destination: "/mnt/img"}, isNotFound},
		{"sub path out of the image", runtime.ImageMount{Image: ref, Destination: "/mnt/img", SubPath: "../../etc"}, isInvalidArgument},
		{"absolute sub path", runtime.ImageMount{Image: ref, Destination: "/mnt/img", SubPath: "/etc"}, isInvalidArgument},
		{"sub path through a link out of the image", runtime.ImageMount{Image: ref, Destination: "/mnt/img", SubPath: "escape"}, isNotFound},
		{"missing sub path", runtime.ImageMount{Image: ref, Destination: "/mnt/img", SubPath: "data/nothere"}, isNotFound},
		{"sub path to a FIFO", runtime.ImageMount{Image: ref, Destination: "/mnt/img", SubPath: "fifo"}, isInvalidArgument},
		{"over the root", runtime.ImageMount{Image: ref, Destination: "/"}, isInvalidArgument},
		{"relative destination", runtime.ImageMount{Image: ref, Destination: "mnt"}, isInvalidArgument},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			cfg := h.Config(t, "/bin/true")
			// A first mount that would work: the refusal of the second
			// must release its hold too.
			cfg.ImageMounts = []runtime.ImageMount{{Image: ref, Destination: "/mnt/first"}, tc.mount}
			id := NewID("imgmount")
			_, err := rt.Create(ctx, id, cfg)
			require.Truef(t, tc.class(err), "%v", err)
			if tc.name == "unknown image" {
				require.ErrorContains(t, err, "berth-test/missing:nothere")
			}
			requireNotCreated(t, h, rt, id)
		})
	}
	cfg := h.Config(t, "/bin/true")
	cfg.ImageMounts = []runtime.ImageMount{{Image: ref, Destination: "/mnt/img"}, {Image: ref, Destination: "/mnt/img"}}
	_, err = rt.Create(ctx, NewID("imgmount"), cfg)
	require.Truef(t, isInvalidArgument(err), "two mounts at one place: %v", err)

	script := `cat /mnt/img/data/hello /mnt/sub/hello
ls -n /mnt/img/data/owned | awk '{print "owner", $3}'
touch /mnt/img/new 2>/dev/null && echo WROTE-ROOT
echo tenant > /mnt/img/data/hello 2>/dev/null && echo WROTE-FILE
mkdir /mnt/sub/dir 2>/dev/null && echo WROTE-SUB
mount -o remount,rw,bind /mnt/img 2>/dev/null && echo REMOUNTED
grep ' /mnt/img ' /proc/self/mounts`
	var held []*runtime.Container
	for _, userns := range []bool{false, true} {
		if userns && !rt.Capabilities().UserNamespace {
			continue
		}
		out := newBuffer()
		cfg := h.Config(t, "/bin/sh", "-c", script)
		cfg.UserNamespace = userns
		cfg.IO = runtime.IO{Stdout: out, Stderr: out}
		cfg.ImageMounts = []runtime.ImageMount{{Image: ref, Destination: "/mnt/img"}, {Image: ref, Destination: "/mnt/sub", SubPath: "link"}}
		c := create(t, rt, NewID("imgmount"), cfg)
		require.NoError(t, c.Start(ctx))
		_, err := c.Wait(ctx)
		require.NoError(t, err)
		got := out.String()
		require.Contains(t, got, "from-image\nfrom-image\n", "the image, and its sub path through a link that stays inside it (userns %v)", userns)
		require.Contains(t, got, "owner 1000\n", "the image's owners, in a user namespace too (userns %v)", userns)
		for _, w := range []string{"WROTE", "REMOUNTED"} {
			require.NotContains(t, got, w, "a write reached the image (userns %v)", userns)
		}
		line := mountsLine(got, "/mnt/img")
		require.NotEmpty(t, line, got)
		opts := strings.Split(strings.Fields(line)[3], ",")
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			require.Contains(t, opts, o, line)
		}
		held = append(held, c)
	}
	b, err := os.ReadFile(filepath.Join(tree, "data/hello"))
	require.NoError(t, err)
	require.Equal(t, "from-image\n", string(b), "the store's tree is unchanged")
	_, err = os.Lstat(filepath.Join(tree, "new"))
	require.True(t, os.IsNotExist(err), "nothing was written in the store's tree")

	// The containers hold the tree: removing the image keeps it while
	// they exist, and their deletion lets it go (which a hold leaked by a
	// refused create above would prevent).
	_, err = rt.Images().Remove(ctx, ref)
	require.NoError(t, err)
	_, err = os.Stat(tree)
	require.NoError(t, err, "held by the containers")
	for _, c := range held {
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	}
	_, err = os.Stat(tree)
	require.Truef(t, os.IsNotExist(err), "the tree outlived its image and its last container: %v", err)
}
