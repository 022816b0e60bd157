package image_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
)

// A tenant's archive claims "ubuntu:latest" and "app:1". The host takes
// app:1 only, under the tenant's prefix; the archive cannot touch the
// host's own ubuntu:latest.
func ExampleStore_Import() {
	work, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(work)
	ctx := context.Background()

	im := imagetest.NewImage([][]byte{imagetest.Tar(imagetest.File("etc/motd", "hello\n"))}, "/bin/sh")
	im.Tags = []string{"ubuntu:latest", "app:1"}
	archive := filepath.Join(work, "tenant.tar")
	_ = os.WriteFile(archive, imagetest.DockerSave(im), 0o644)

	store, err := image.Open(filepath.Join(work, "images"))
	if err != nil {
		panic(err)
	}
	res, err := store.Import(ctx, archive, image.ImportOptions{
		Tags: image.TagPolicy{Expect: []string{"app:1"}, Prefix: "tenants/a"},
	})
	if err != nil {
		panic(err)
	}
	for _, t := range res.Tags {
		fmt.Println(t.Action, t.Ref)
	}
	img, _ := store.Get(ctx, "tenants/a/app:1")
	fmt.Println(img.Config().Cmd)
	_, err = store.Get(ctx, "ubuntu:latest")
	fmt.Println("ubuntu:latest not found:", errdefs.IsNotFound(err))
	// Output:
	// created tenants/a/app:1
	// skipped ubuntu:latest
	// [/bin/sh]
	// ubuntu:latest not found: true
}

// Unpack writes an image's root filesystem into a new directory; Rootfs
// keeps one shared tree per image for containers.
func ExampleStore_Unpack() {
	work, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(work)
	ctx := context.Background()
	store, _ := image.Open(filepath.Join(work, "images"))
	im := imagetest.NewImage([][]byte{
		imagetest.Tar(imagetest.File("etc/motd", "lower\n"), imagetest.File("tmp/junk", "x")),
		imagetest.Gzip(imagetest.Tar(imagetest.File("etc/motd", "upper\n"), imagetest.File("tmp/.wh.junk", ""))),
	})
	res, _ := store.ImportReader(ctx, bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Name: "app:1"}})
	fmt.Println(res.Tags[0].Ref)

	dir := filepath.Join(work, "rootfs")
	if _, err := store.Unpack(ctx, "app:1", dir, image.UnpackOptions{}); err != nil {
		panic(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "etc/motd"))
	_, err := os.Stat(filepath.Join(dir, "tmp/junk"))
	fmt.Printf("motd %q, junk whited out: %v\n", b, os.IsNotExist(err))

	tree, _ := store.Rootfs(ctx, "app:1", image.RootfsOptions{Holder: "container-1"})
	fmt.Println(filepath.Dir(tree) == filepath.Join(store.Dir(), "rootfs"))
	_ = store.ReleaseRootfs(ctx, "container-1")
	// Output:
	// app:1
	// motd "upper\n", junk whited out: true
	// true
}
