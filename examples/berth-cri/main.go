// Command berth-cri serves the Kubernetes Container Runtime Interface over
// berth on a unix socket: pods and containers on berth's embedded engine
// (runtime handler "" or "libcontainer") and its disk-image engine
// ("parallels"), pod networks through CNI, images through berth's store
// and registry client.
//
//	berth-cri --root /var/lib/berth-cri --listen unix:///run/berth/cri.sock \
//	    [--cni-conf-dir DIR] [--cni-bin-dir DIR]... \
//	    [--allow-privileged] [--allow-host-namespaces] [--allow-unfiltered-seccomp] \
//	    [--allow-setid-images] [--streaming-addr 127.0.0.1:PORT] \
//	    [--insecure-registry HOST]... [--registry-mirror HOST=URL]... \
//	    [--cpu-profile FILE] [--trace FILE] [--supervisor BINARY]
//
// --supervisor names what keeps the containers: examples/berth-supervisor
// built from the same berth (see libcontainer.WithSupervisorBinary; by
// default berth-supervisor beside berth-cri if there is one, else
// berth-cri itself, as with "self").
//
// --cpu-profile and --trace write a CPU profile (go tool pprof) and an
// execution trace (go tool trace) of the whole run, for scripts/bench-cri.sh
// and whoever looks for where berth-cri's time goes; no listener serves
// them.
//
// Containers outlive it: their supervisors keep them, and a restarted
// berth-cri on the same root serves the pods and containers it made
// before. Exec, attach and port-forward streams are served on a loopback
// address (--streaming-addr, a port of the kernel's choosing by default)
// that the kubelet reaches on the same host. It stops on SIGINT or
// SIGTERM, letting calls in progress end; streams are ended (an exec's
// process killed, an attachment dropped, a forwarded connection closed).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/cri"
	"github.com/berthrun/berth/cri/network"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/driver"
	"google.golang.org/grpc"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	libcontainer.Init()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "berth-cri: %v\n", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then lets calls in progress end.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("berth-cri", flag.ContinueOnError)
	root := fs.String("root", "/var/lib/berth-cri", "state `DIR`")
	listen := fs.String("listen", "unix:///run/berth/cri.sock", "unix socket `ADDRESS` to serve on")
	streamAddr := fs.String("streaming-addr", cri.DefaultStreamAddr, "loopback `IP:PORT` of the streaming server (exec, attach, port-forward); it has no authentication, so only a loopback IP is taken")
	cniConf := fs.String("cni-conf-dir", "/etc/berth/cni/net.d", "CNI network configuration `DIR` (the first *.conflist in it)")
	var cniBin list
	fs.Var(&cniBin, "cni-bin-dir", "CNI plugin `DIR` (repeatable; default /usr/lib/cni, /opt/cni/bin)")
	allowPriv := fs.Bool("allow-privileged", false, "admit privileged containers and unconfined seccomp")
	allowHost := fs.Bool("allow-host-namespaces", false, "admit pods on the host's network, PID or IPC namespace")
	setid := fs.Bool("allow-setid-images", false, "keep setuid/setgid bits and file capabilities in images' unpacked trees (usable in containers without no_new_privs)")
	unfiltered := fs.Bool("allow-unfiltered-seccomp", false, "with --allow-privileged: run an unconfined container with no seccomp filter at all (not even berth's loop-device rules)")
	var insecure, mirrors list
	fs.Var(&insecure, "insecure-registry", "reach registry `HOST[:PORT]` over plain HTTP (repeatable)")
	fs.Var(&mirrors, "registry-mirror", "try the mirror before the registry: `HOST=URL` (repeatable)")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the whole run to `FILE`")
	traceFile := fs.String("trace", "", "write an execution trace of the whole run to `FILE`")
	supervisor := fs.String("supervisor", "", "supervisor `BINARY` of the containers (default: berth-supervisor beside berth-cri if there, else berth-cri itself; self: berth-cri)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *cpuProfile != "" {
		stop, err := profile(*cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *traceFile != "" {
		stop, err := profile(*traceFile, trace.Start, trace.Stop)
		if err != nil {
			return err
		}
		defer stop()
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
	var storeOpts []image.Option
	if *setid {
		storeOpts = append(storeOpts, image.WithSetidRootfs())
	}
	store, err := image.Open(filepath.Join(*root, "images"), storeOpts...)
	if err != nil {
		return err
	}
	security := runtime.SecurityPolicy{AllowPrivileged: *allowPriv, AllowHostNamespaces: *allowHost, AllowUnfilteredSeccomp: *unfiltered}
	var engineOpts []libcontainer.Option
	if *supervisor == "" {
		*supervisor = libcontainer.SupervisorBinaryBeside()
	}
	if *supervisor != "" && *supervisor != "self" {
		engineOpts = append(engineOpts, libcontainer.WithSupervisorBinary(*supervisor))
	}
	handlers := map[string]*runtime.Runtime{}
	for _, h := range []struct {
		names []string
		open  func(string) (driver.Runtime, error)
	}{
		{[]string{"", "libcontainer"}, func(dir string) (driver.Runtime, error) { return libcontainer.Open(dir, engineOpts...) }},
		{[]string{"parallels"}, func(dir string) (driver.Runtime, error) {
			return parallels.Open(dir, parallels.WithEngineOptions(engineOpts...))
		}},
	} {
		dir := filepath.Join(*root, "handlers", h.names[len(h.names)-1])
		engine, err := h.open(dir)
		if err != nil {
			return err
		}
		rt, err := runtime.New(engine, runtime.WithStateDir(dir), runtime.WithSecurityPolicy(security), runtime.WithImageStore(store))
		if err != nil {
			engine.Close()
			return err
		}
		defer rt.Close()
		for _, n := range h.names {
			handlers[n] = rt
		}
	}
	if len(cniBin) == 0 {
		cniBin = list{"/usr/lib/cni", "/opt/cni/bin"}
	}
	netw, err := network.New(network.Options{ConfDir: *cniConf, BinDirs: cniBin, CacheDir: filepath.Join(*root, "cni")})
	if err != nil {
		return err
	}
	rs, err := cri.NewRuntimeService(cri.RuntimeOptions{Handlers: handlers, Images: store, Network: netw, StateDir: filepath.Join(*root, "cri"), StreamAddr: *streamAddr})
	if err != nil {
		return err
	}
	defer func() {
		if err := rs.Close(); err != nil {
			log.Printf("close: %v", err)
		}
	}()
	log.Printf("streaming server on %s", rs.StreamAddr())
	l, err := cri.Listen(*listen)
	if err != nil {
		return err
	}
	srv := cri.NewServer(cri.NewImageService(store, rc), rs, grpc.UnaryInterceptor(logErrors))
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	err = srv.Serve(l)
	os.Remove(strings.TrimPrefix(*listen, "unix://"))
	return err
}

// profile creates file and starts writing a profile to it; the returned
// function ends the profile and closes the file.
func profile(file string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return func() {
		stop()
		if err := f.Close(); err != nil {
			log.Printf("%s: %v", file, err)
		}
	}, nil
}

// logErrors logs every call that fails, with its error, to stderr: what
// the kubelet sees only as a status is here with its cause.
func logErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s: %v", info.FullMethod, err)
	}
	return resp, err
}
