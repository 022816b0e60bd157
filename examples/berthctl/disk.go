package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/berthrun/berth/runtime"
)

// cmdResizeDisk: berthctl resize-disk ID SIZE grows a container's own root
// disk while it runs (backends with root disks: parallels).
func (a *app) cmdResizeDisk(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseN(fs, args, 2); err != nil {
		return 0, err
	}
	var size byteSize
	if err := size.Set(fs.Arg(1)); err != nil {
		return 0, usageErrorf("resize-disk: SIZE %q: %v", fs.Arg(1), err)
	}
	return a.onContainer(fs.Arg(0), func(ctx context.Context, c *runtime.Container) error {
		return c.ResizeDisk(ctx, size.n)
	})
}

// cmdSnapshot: berthctl snapshot ID REF commits a snapshot of the
// container's root filesystem (taken while it runs) as the image REF of the
// store under --root, and prints REF and the image's digest.
func (a *app) cmdSnapshot(fs *flag.FlagSet, args []string) (int, error) {
	retag := fs.Bool("allow-retag", false, "let REF move from the image it names now")
	if err := a.parseN(fs, args, 2); err != nil {
		return 0, err
	}
	return a.onContainer(fs.Arg(0), func(ctx context.Context, c *runtime.Container) error {
		im, err := c.Commit(ctx, runtime.CommitOptions{Tag: fs.Arg(1), AllowRetag: *retag})
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, fs.Arg(1), im.Digest)
		return nil
	})
}
