// Command benchinproc is scripts/bench-run.sh's in-process row: it times
// create+start+wait+delete of /bin/true through the library, as an
// orchestrator calls it (attached to the calling process, and kept by a
// supervisor), against `runc run` of a bundle doing the same, interleaved
// in one run, and prints the medians and the ratios.
//
//	benchinproc [-rounds 30] ROOTFS BUNDLE RUNC_ROOT
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime"
)

func main() {
	libcontainer.Init()
	rounds := flag.Int("rounds", 30, "runs of each")
	flag.Parse()
	if flag.NArg() != 3 {
		fmt.Fprintln(os.Stderr, "usage: benchinproc [-rounds N] ROOTFS BUNDLE RUNC_ROOT")
		os.Exit(2)
	}
	if err := run(*rounds, flag.Arg(0), flag.Arg(1), flag.Arg(2)); err != nil {
		fmt.Fprintln(os.Stderr, "benchinproc:", err)
		os.Exit(1)
	}
}

func open(root string, opts ...libcontainer.Option) (*runtime.Runtime, error) {
	e, err := libcontainer.Open(root, opts...)
	if err != nil {
		return nil, err
	}
	return runtime.New(e, runtime.WithStateDir(root))
}

func run(rounds int, rootfs, bundle, runcRoot string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("/var/tmp", "berth-inproc.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o711)
	attached, err := open(filepath.Join(dir, "attached"), libcontainer.Attached())
	if err != nil {
		return err
	}
	supervised, err := open(filepath.Join(dir, "supervised"))
	if err != nil {
		return err
	}
	one := func(rt *runtime.Runtime, id string) error {
		c, err := rt.Create(ctx, id, &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/true")})
		if err != nil {
			return err
		}
		if err := c.Start(ctx); err != nil {
			return err
		}
		if st, err := c.Wait(ctx); err != nil || st.Code != 0 {
			return fmt.Errorf("wait: %v %v", st, err)
		}
		return c.Delete(ctx, runtime.DeleteOptions{})
	}
	runc := func(id string) error {
		cmd := exec.Command("runc", "--root", runcRoot, "run", "--bundle", bundle, id)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("runc run: %v: %s", err, out)
		}
		return nil
	}
	var ta, ts, tr []time.Duration
	timed := func(into *[]time.Duration, f func() error) error {
		t0 := time.Now()
		if err := f(); err != nil {
			return err
		}
		*into = append(*into, time.Since(t0))
		return nil
	}
	// One untimed round of each warms caches (and starts the supervisor).
	var warm []time.Duration
	if err := timed(&warm, func() error { return one(attached, "warm-a") }); err != nil {
		return err
	}
	if err := timed(&warm, func() error { return one(supervised, "warm-s") }); err != nil {
		return err
	}
	if err := timed(&warm, func() error { return runc("warm-inproc") }); err != nil {
		return err
	}
	for i := range rounds {
		if err := timed(&ta, func() error { return one(attached, fmt.Sprintf("a%d", i)) }); err != nil {
			return err
		}
		if err := timed(&ts, func() error { return one(supervised, fmt.Sprintf("s%d", i)) }); err != nil {
			return err
		}
		if err := timed(&tr, func() error { return runc(fmt.Sprintf("inproc%d", i)) }); err != nil {
			return err
		}
	}
	ma, ms, mr := median(ta), median(ts), median(tr)
	fmt.Printf("create+start+wait+delete of /bin/true in process (the library), median of %d runs each\n", rounds)
	fmt.Printf("  attached to the caller   %7.1f ms\n", ms2(ma))
	fmt.Printf("  kept by a supervisor     %7.1f ms\n", ms2(ms))
	fmt.Printf("  runc run (same run)      %7.1f ms\n", ms2(mr))
	fmt.Printf("  attached/runc   = %.2f (target <= 0.50)\n", float64(ma)/float64(mr))
	fmt.Printf("  supervised/runc = %.2f (target <= 0.50)\n", float64(ms)/float64(mr))
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms2(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
