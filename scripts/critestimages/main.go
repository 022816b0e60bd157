// Command critestimages builds, offline, the test images that critest
// (sigs.k8s.io/cri-tools) pulls by their upstream names, as OCI layouts
// that scripts/setup-critest.sh pushes to the local registry:
//
//	critestimages -pkgs DIR -out DIR   build every image under -out
//	critestimages -list                print the references, one a line
//
// -pkgs is a tree where Debian's busybox (the dynamic build), nginx and
// nginx-common were extracted (dpkg-deb -x). procps' pgrep, util-linux's
// ipcs and the shared libraries of every binary come from this host
// (Debian too); the libraries are found from the binaries' ELF headers,
// as ldd would, and the dynamic loader is copied with them.
//
// -out receives one OCI layout per image (DIR/NAME) and DIR/refs, lines
// of "NAME REFERENCE" to push; an image with several references (the
// three tags of test-image-tags, pause on two registries) has one layout
// and one line per reference. Builds are reproducible: fixed times,
// owners and order, so the same inputs give the same digests.
//
// The binary is also the images' pause (/pause in the pause image) and
// nnp (the setuid program of the nonewprivs image): it acts as either when
// called by that name. It must be built static (CGO_ENABLED=0), which it
// checks before copying itself.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "pause":
		pause()
		return
	case "nnp":
		// What Kubernetes' nonewprivs image prints: setuid root takes
		// effect unless no_new_privs is set.
		fmt.Printf("Effective uid: %d\n", os.Geteuid())
		return
	}
	pkgs := flag.String("pkgs", "", "tree of the extracted Debian packages (busybox, nginx, nginx-common)")
	out := flag.String("out", "", "directory for the OCI layouts and the refs file (replaced)")
	list := flag.Bool("list", false, "print the references and exit")
	flag.Parse()
	if *list {
		for _, img := range images {
			for _, ref := range img.refs {
				fmt.Println(ref)
			}
		}
		return
	}
	if *pkgs == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: critestimages -pkgs DIR -out DIR | critestimages -list")
		os.Exit(2)
	}
	if err := build(*pkgs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "critestimages:", err)
		os.Exit(1)
	}
}

// pause is Kubernetes' pause: it holds a pod's namespaces, reaps the
// children it inherits and exits on INT or TERM.
func pause() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (berth critestimages)")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
