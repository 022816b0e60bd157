// Command benchpull is berth's side of scripts/bench-registry.sh, a
// process of its own so that /usr/bin/time measures the pull alone:
//
//	benchpull push ARCHIVE REF
//	    import ARCHIVE (docker-save or OCI) into a temporary store and push
//	    it to REF with package registry; print the manifest's digest
//	benchpull pull [-cpuprofile FILE] ROOT REF
//	    pull REF into the image store at ROOT (created if needed) with
//	    package registry; print the bytes read from the registry
//
// Loopback registries are reached over plain HTTP, as package registry
// always allows.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "push":
		err = push(os.Args[2:])
	case "pull":
		err = pull(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchpull:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchpull push ARCHIVE REF | benchpull pull [-cpuprofile FILE] ROOT REF")
	os.Exit(2)
}

func push(args []string) error {
	if len(args) != 2 {
		usage()
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "benchpull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := image.Open(dir)
	if err != nil {
		return err
	}
	res, err := store.Import(ctx, args[0], image.ImportOptions{})
	if err != nil {
		return err
	}
	if len(res.Images) != 1 {
		return fmt.Errorf("%s holds %d images, not one", args[0], len(res.Images))
	}
	c, err := registry.New(registry.Options{})
	if err != nil {
		return err
	}
	d, err := c.Push(ctx, store, res.Images[0].Digest.String(), args[1])
	if err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}

func pull(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the pull to `FILE`")
	fs.Parse(args)
	if fs.NArg() != 2 {
		usage()
	}
	store, err := image.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	c, err := registry.New(registry.Options{})
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	res, err := c.Pull(context.Background(), store, fs.Arg(1), image.ImportOptions{})
	if err != nil {
		return err
	}
	fmt.Println(res.Read)
	return nil
}
