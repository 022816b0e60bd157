// Command benchinproc is scripts/bench-run.sh's in-process row: it times
// create+start+wait+delete of /bin/true through the library, as an
// orchestrator calls it (attached to the calling process, and kept by a
// supervisor), against `runc run` of a bundle doing the same, interleaved
// in one run, and prints the medians and the ratios. Each -supervisor
// NAME=BINARY adds a row kept by supervisors running BINARY
// (libcontainer.WithSupervisorBinary): a container's init is a re-exec of
// its supervisor's binary, so the binary's size and package
// initialization count in every start. A last row is libcontainer alone,
// in process, on runc's bundle and without berth: what runc run costs
// without its command line's boot, the floor of any library that starts
// containers through libcontainer's init.
//
//	benchinproc [-rounds 30] [-supervisor NAME=BINARY]... ROOTFS BUNDLE RUNC_ROOT
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	lc "github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime"
)

func main() {
	libcontainer.Init()
	rounds := flag.Int("rounds", 30, "runs of each")
	boot := flag.String("cli-boot", "", "a `PROGRAM` that does nothing (scripts/bootfloor), timed in the rounds: the floor of a command line is libcontainer alone and its boot")
	var sups supervisorFlags
	flag.Var(&sups, "supervisor", "a row kept by supervisors running `NAME=BINARY` (repeatable)")
	flag.Parse()
	if flag.NArg() != 3 {
		fmt.Fprintln(os.Stderr, "usage: benchinproc [-rounds N] ROOTFS BUNDLE RUNC_ROOT")
		os.Exit(2)
	}
	if err := run(*rounds, *boot, sups, flag.Arg(0), flag.Arg(1), flag.Arg(2)); err != nil {
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

func run(rounds int, boot string, sups supervisorFlags, rootfs, bundle, runcRoot string) error {
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
	var spec specs.Spec
	if err := fsutil.ReadJSON(filepath.Join(bundle, "config.json"), &spec); err != nil {
		return err
	}
	lcRoot := filepath.Join(dir, "libcontainer")
	// libcontainer's init warns that it cannot raise the bundle's ambient
	// capabilities (none is inheritable); the runc installed here does
	// not say so.
	logrus.SetLevel(logrus.ErrorLevel)
	// bare is what runc run does for the bundle, less its command line:
	// libcontainer's create, start, wait and destroy, in process.
	bare := func(id string) error {
		cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: &spec})
		if err != nil {
			return err
		}
		c, err := lc.Create(lcRoot, id, cfg)
		if err != nil {
			return err
		}
		// As runc's command line makes it from the bundle.
		p := &lc.Process{Args: spec.Process.Args, Env: spec.Process.Env, Cwd: spec.Process.Cwd, Init: true, NoNewPrivileges: &spec.Process.NoNewPrivileges}
		if c := spec.Process.Capabilities; c != nil {
			p.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
		}
		err = c.Run(p)
		if err == nil {
			if st, werr := p.Wait(); werr != nil || !st.Success() {
				err = fmt.Errorf("wait: %v %v", st, werr)
			}
		}
		return errors.Join(err, c.Destroy())
	}
	var tr, tb, tboot []time.Duration
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
	if err := timed(&warm, func() error { return bare("warm-bare") }); err != nil {
		return fmt.Errorf("libcontainer alone: %w", err)
	}
	for i := range rounds {
		for j, r := range rows {
			if err := timed(&r.t, func() error { return one(r.rt, fmt.Sprintf("r%d-%d", j, i)) }); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
		}
		if err := timed(&tr, func() error { return runc(fmt.Sprintf("inproc%d", i)) }); err != nil {
			return err
		}
		if err := timed(&tb, func() error { return bare(fmt.Sprintf("bare%d", i)) }); err != nil {
			return fmt.Errorf("libcontainer alone: %w", err)
		}
		if boot != "" {
			if err := timed(&tboot, func() error { return exec.Command(boot).Run() }); err != nil {
				return fmt.Errorf("%s: %w", boot, err)
			}
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
	if boot != "" {
		fmt.Printf("  %-48s %7.1f ms\n", "a Go program linking nsenter, doing nothing", ms2(median(tboot)))
		fmt.Printf("  %-48s = %.2f (the floor of a command line on libcontainer; berthctl's target <= 0.80)\n", "(libcontainer alone + that boot) / runc", float64(median(tb)+median(tboot))/float64(mr))
	}
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
