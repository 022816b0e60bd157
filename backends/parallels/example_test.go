package parallels_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// A container whose root filesystem is a disk of its own: it writes to
// its disk, then moves cold to another state root (another host, in
// production) as one file. As root; the program calls libcontainer.Init
// first thing in main (here, in TestMain).
func Example() {
	ctx := context.Background()
	work, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o711)
	rootfs := filepath.Join(work, "rootfs")
	if err := fixture.Busybox(rootfs); err != nil {
		fmt.Println(err)
		return
	}
	open := func(name string) (*runtime.Runtime, error) {
		engine, err := parallels.Open(filepath.Join(work, name))
		if err != nil {
			return nil, err
		}
		return runtime.New(engine, runtime.WithStateDir(filepath.Join(work, name)))
	}
	src, err := open("host-a")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()

	// The command prints what its disk holds, then leaves a note there.
	spec := runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "cat /root/note 2>/dev/null || echo no note yet; echo written on host-a > /root/note")
	c, err := src.Create(ctx, "disk-example", &runtime.Config{Spec: spec, DiskSize: 64 << 20, IO: runtime.IO{Stdout: os.Stdout}})
	if err != nil {
		fmt.Println(err)
		return
	}
	var disk *parallels.Disk
	if c.As(&disk) {
		img, _ := disk.Image(ctx)
		fmt.Println("root disk:", filepath.Base(img))
	}
	if err := c.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := c.Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// Cold move: export the stopped container, delete it here, import it
	// under another root.
	exported := filepath.Join(work, "export")
	if err := c.Export(ctx, exported); err != nil {
		fmt.Println(err)
		return
	}
	_ = c.Delete(ctx, runtime.DeleteOptions{})
	dst, err := open("host-b")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dst.Close()
	moved, err := dst.Import(ctx, "disk-example", exported, runtime.ImportOptions{IO: runtime.IO{Stdout: os.Stdout}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer moved.Delete(ctx, runtime.DeleteOptions{Force: true})
	if err := moved.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	_, _ = moved.Wait(ctx)
	// Output:
	// root disk: disk.img
	// no note yet
	// written on host-a
}
