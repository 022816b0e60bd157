package libcontainer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// Run a command in a container on the embedded engine, as root. The program
// calls libcontainer.Init first thing in main (here, in TestMain).
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

	engine, err := libcontainer.Open(filepath.Join(work, "state"))
	if err != nil {
		fmt.Println(err)
		return
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(filepath.Join(work, "state")))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()

	spec := runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "echo hello from $(hostname); exit 3")
	c, err := rt.Create(ctx, "example", &runtime.Config{Spec: spec, IO: runtime.IO{Stdout: os.Stdout}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Delete(ctx, runtime.DeleteOptions{Force: true})
	if err := c.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	status, err := c.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("exit code", status.Code)
	// Output:
	// hello from berth
	// exit code 3
}
