// Command berth-cri serves the Kubernetes Container Runtime Interface over
// berth on a unix socket: so far its image service (crictl pull, images,
// inspecti, rmi, imagefsinfo) and the runtime service's version and
// status.
//
//	berth-cri --root /var/lib/berth-cri --listen unix:///run/berth/cri.sock \
//	    [--insecure-registry HOST]... [--registry-mirror HOST=URL]...
//
// It stops on SIGINT or SIGTERM, letting calls in progress end.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berthrun/berth/cri"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "berth-cri: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("berth-cri", flag.ContinueOnError)
	root := fs.String("root", "/var/lib/berth-cri", "state `DIR`")
	listen := fs.String("listen", "unix:///run/berth/cri.sock", "unix socket `ADDRESS` to serve on")
	var insecure, mirrors list
	fs.Var(&insecure, "insecure-registry", "reach registry `HOST[:PORT]` over plain HTTP (repeatable)")
	fs.Var(&mirrors, "registry-mirror", "try the mirror before the registry: `HOST=URL` (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	opts := registry.Options{Insecure: insecure, Mirrors: map[string][]string{}}
	for _, m := range mirrors {
		host, u, err := registry.ParseMirror(m)
		if err != nil {
			return err
		}
		opts.Mirrors[host] = append(opts.Mirrors[host], u)
	}
	rc, err := registry.New(opts)
	if err != nil {
		return err
	}
	store, err := image.Open(filepath.Join(*root, "images"))
	if err != nil {
		return err
	}
	l, err := cri.Listen(*listen)
	if err != nil {
		return err
	}
	srv := cri.NewServer(cri.NewImageService(store, rc))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Stop()
	}()
	err = srv.Serve(l)
	os.Remove(strings.TrimPrefix(*listen, "unix://"))
	return err
}
