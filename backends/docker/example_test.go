package docker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthrun/berth/backends/docker"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// Run a container on the Docker Engine from an image berth imported into
// its own store, under its limits and tag policy: the daemon only ever
// receives an untagged archive berth wrote, so no tenant archive can
// re-point a tag of the daemon's. Needs a dockerd at
// unix:///run/docker.sock (scripts/setup.sh starts one).
func Example() {
	ctx := context.Background()
	work, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(work)

	// A busybox image, as a tenant's docker-save archive would bring it.
	rootfs := filepath.Join(work, "rootfs")
	if err := fixture.Busybox(rootfs); err != nil {
		fmt.Println(err)
		return
	}
	layer, err := imagetest.DirTar(rootfs)
	if err != nil {
		fmt.Println(err)
		return
	}
	im := imagetest.NewImage([][]byte{layer}, "/bin/sh")
	im.Tags = []string{"busybox:latest"}
	archive := filepath.Join(work, "busybox.tar")
	_ = os.WriteFile(archive, imagetest.DockerSave(im), 0o644)
	store, err := image.Open(filepath.Join(work, "images"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = store.Import(ctx, archive, image.ImportOptions{Tags: image.TagPolicy{Prefix: "tenant-a"}})
	if err != nil {
		fmt.Println(err)
		return
	}

	engine, err := docker.Open(docker.WithHost("unix:///run/docker.sock"), docker.WithStateDir(filepath.Join(work, "docker")))
	if err != nil {
		fmt.Println(err)
		return
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(filepath.Join(work, "state")), runtime.WithImageStore(store))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()

	c, err := rt.Create(ctx, "docker-example", &runtime.Config{
		Spec:  runtime.DefaultSpec("", "/bin/sh", "-c", "echo hello from docker; exit 3"),
		Image: "tenant-a/busybox:latest",
		IO:    runtime.IO{Stdout: os.Stdout},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Delete(ctx, runtime.DeleteOptions{Force: true})
	if err := c.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	st, err := c.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("exit code", st.Code)
	// Output:
	// hello from docker
	// exit code 3
}
