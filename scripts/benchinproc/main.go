// Command benchinproc is scripts/bench-run.sh's in-process row: it times
// create+start+wait+delete of /bin/true through the library, as an
// orchestrator calls it (attached to the calling process, and kept by a
// supervisor), against `runc run` of a bundle doing the same, interleaved
// in one run, and prints the medians and the ratios. Each -supervisor
// NAME=BINARY adds a row kept by supervisors running BINARY
// (libcontainer.WithSupervisorBinary): a container's init is a re-exec of
// its supervisor's binary, so the binary's size and package
// initialization count in every start. Two rows more come from
// scripts/bootfloor, a program linking libcontainer and nothing of berth:
// libcontainer alone on runc's bundle (what runc run costs without its
// command line, the floor of any library that starts containers through
// libcontainer's init), and that program's boot doing nothing (with the
// first, the floor of a command line).
//
//	benchinproc [-rounds 30] [-supervisor NAME=BINARY]... -floor BOOTFLOOR ROOTFS BUNDLE RUNC_ROOT
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime"
)

func main() {
	libcontainer.Init()
	rounds := flag.Int("rounds", 30, "runs of each")
	floor := flag.String("floor", "", "scripts/bootfloor's `PROGRAM`: libcontainer alone, and a boot, timed in the rounds")
	var sups supervisorFlags
	flag.Var(&sups, "supervisor", "a row kept by supervisors running `NAME=BINARY` (repeatable)")
	flag.Parse()
	if flag.NArg() != 3 || *floor == "" {
		fmt.Fprintln(os.Stderr, "usage: benchinproc [-rounds N] [-supervisor NAME=BINARY]... -floor BOOTFLOOR ROOTFS BUNDLE RUNC_ROOT")
		os.Exit(2)
	}
	if err := run(*rounds, *floor, sups, flag.Arg(0), flag.Arg(1), flag.Arg(2)); err != nil {
		fmt.Fprintln(os.Stderr, "benchinproc:", err)
		os.Exit(1)
	}
}

type supervisorFlags [][2]string

func (f *supervisorFlags) String() string { return fmt.Sprint(*f) }
func (f *supervisorFlags) Set(v string) error {
	name, bin, ok := strings.Cut(v, "=")
	if !ok || name == "" || bin == "" {
		return fmt.Errorf("want NAME=BINARY, not %q", v)
	}
	*f = append(*f, [2]string{name, bin})
	return nil
}

func open(root string, opts ...libcontainer.Option) (*runtime.Runtime, error) {
	e, err := libcontainer.Open(root, opts...)
	if err != nil {
		return nil, err
	}
	return runtime.New(e, runtime.WithStateDir(root))
}

// row is a way of running the container, and its times.
type row struct {
	name string
	rt   *runtime.Runtime
	t    []time.Duration
}

func run(rounds int, floor string, sups supervisorFlags, rootfs, bundle, runcRoot string) error {
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
	rows := []*row{{name: "attached to the caller", rt: attached}, {name: "kept by a supervisor", rt: supervised}}
	for i, sup := range sups {
		rt, err := open(filepath.Join(dir, fmt.Sprintf("sup%d", i)), libcontainer.WithSupervisorBinary(sup[1]))
		if err != nil {
			return err
		}
		rows = append(rows, &row{name: "kept by " + sup[0], rt: rt})
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
	// bare is what runc run does for the bundle, less its command line:
	// libcontainer's create, start, wait and destroy, timed by a program
	// that links libcontainer alone (scripts/bootfloor), whose init
	// initializes nothing of berth's.
	lcState := filepath.Join(dir, "libcontainer")
	var tb, tboot []time.Duration
	bare := func(id string) error {
		out, err := exec.Command(floor, "run", bundle, lcState, id).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return fmt.Errorf("%s run: %w: %s", floor, err, ee.Stderr)
		} else if err != nil {
			return fmt.Errorf("%s run: %w", floor, err)
		}
		ms, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			return fmt.Errorf("%s run: %w", floor, err)
		}
		tb = append(tb, time.Duration(ms*float64(time.Millisecond)))
		return nil
	}
	var tr []time.Duration
	timed := func(into *[]time.Duration, f func() error) error {
		t0 := time.Now()
		if err := f(); err != nil {
			return err
		}
		*into = append(*into, time.Since(t0))
		return nil
	}
	// One untimed round of each warms caches (and starts the supervisors).
	var warm []time.Duration
	for i, r := range rows {
		if err := timed(&warm, func() error { return one(r.rt, fmt.Sprintf("warm-%d", i)) }); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	if err := timed(&warm, func() error { return runc("warm-inproc") }); err != nil {
		return err
	}
	if err := bare("warm-bare"); err != nil {
		return fmt.Errorf("libcontainer alone: %w", err)
	}
	tb = nil
	for i := range rounds {
		for j, r := range rows {
			if err := timed(&r.t, func() error { return one(r.rt, fmt.Sprintf("r%d-%d", j, i)) }); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
		}
		if err := timed(&tr, func() error { return runc(fmt.Sprintf("inproc%d", i)) }); err != nil {
			return err
		}
		if err := bare(fmt.Sprintf("bare%d", i)); err != nil {
			return fmt.Errorf("libcontainer alone: %w", err)
		}
		if err := timed(&tboot, func() error { return exec.Command(floor).Run() }); err != nil {
			return fmt.Errorf("%s: %w", floor, err)
		}
	}
	mr := median(tr)
	fmt.Printf("create+start+wait+delete of /bin/true in process (the library), median of %d runs each\n", rounds)
	for _, r := range rows {
		fmt.Printf("  %-48s %7.1f ms\n", r.name, ms2(median(r.t)))
	}
	fmt.Printf("  %-48s %7.1f ms\n", "runc run (same run)", ms2(mr))
	fmt.Printf("  %-48s %7.1f ms\n", "libcontainer alone, runc's bundle, no berth", ms2(median(tb)))
	for _, r := range rows {
		fmt.Printf("  %-48s = %.2f (target <= 0.50)\n", r.name+" / runc", float64(median(r.t))/float64(mr))
	}
	fmt.Printf("  %-48s = %.2f (the floor on libcontainer)\n", "libcontainer alone / runc", float64(median(tb))/float64(mr))
	fmt.Printf("  %-48s %7.1f ms\n", "a Go program linking libcontainer, doing nothing", ms2(median(tboot)))
	fmt.Printf("  %-48s = %.2f (the floor of a command line on libcontainer; berthctl's target <= 0.80)\n", "(libcontainer alone + that boot) / runc", float64(median(tb)+median(tboot))/float64(mr))
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
