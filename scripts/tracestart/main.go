// Command tracestart splits the embedded engine's start of a container's
// init (libcontainer's Container.Start, the phase create.init/lc.Start of
// BenchmarkRunTrue) at the points the kernel sees: it runs
//
//	BERTH_PHASES=1 BERTHCTL --root STATE run --rm --rootfs ROOTFS -- /bin/true
//
// under perf trace, N times, and prints the median and the least time of
// each step, from the exec FIFO's creation to Start's return:
//
//  1. the exec FIFO, the sealing of the executable, the clone of the init
//  2. the init's execve (the caller's binary again), the dynamic loader,
//     until nsexec's stage 0 (a C constructor, before the Go runtime)
//  3. nsexec's stages 0 and 1 until stage 2, the init (namespaces; the
//     caller meanwhile puts it in its cgroups and sends the bootstrap data)
//  4. stage 2 until the Go runtime starts
//  5. the Go runtime and every package's initialization until main, when
//     BERTHCTL prints its init's inittrace (build it with
//     -ldflags=-X=runtime.godebugDefault=inittrace=1); else 5 and 6 are one
//  6. libcontainer's init until it mounts the root filesystem (the config
//     from the caller, network, ...)
//  7. the root filesystem (mounts, devices) until pivot_root
//  8. after pivot_root: masked and read-only paths, capabilities
//  9. the seccomp filter, built (libseccomp) and loaded
//  10. until Start returns: the init waits on the exec FIFO, the caller
//     records the state
//
// BERTHCTL's own phases (BERTH_PHASES) are printed too. The steps are
// those of one run: perf trace costs some of each (about a tenth of a
// millisecond per traced system call); compare runs traced alike.
// scripts/trace-start.sh builds BERTHCTL and the root filesystem and runs
// this.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// event is one system call perf trace reported.
type event struct {
	at   float64 // ms since the trace began
	comm string
	call string
	args string
}

var eventLine = regexp.MustCompile(`^\s*([\d.]+) \(\s*[\d.]* ms\): (.+?)/\d+ (\w+)\((.*?)\)`)

var inittrace = regexp.MustCompile(`^init main @([\d.]+) ms`)

// traced are the system calls whose times mark the steps.
const traced = "execve,clone,clone3,prctl,fsopen,pivot_root,mknodat,seccomp"

func main() {
	n := flag.Int("n", 15, "runs")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tracestart [-n RUNS] BERTHCTL ROOTFS")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*n, flag.Arg(0), flag.Arg(1)); err != nil {
		fmt.Fprintln(os.Stderr, "tracestart:", err)
		os.Exit(1)
	}
}

func run(n int, berthctl, rootfs string) error {
	work, err := os.MkdirTemp("", "tracestart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	steps := map[string][]float64{}
	var order []string
	add := func(name string, v float64) {
		if _, ok := steps[name]; !ok {
			order = append(order, name)
		}
		steps[name] = append(steps[name], v)
	}
	for i := range n {
		out := filepath.Join(work, "trace")
		cmd := exec.Command("perf", "trace", "-o", out, "-e", traced, "--",
			berthctl, "--root", filepath.Join(work, "state"), "run", "--rm", "--rootfs", rootfs, "--", "/bin/true")
		cmd.Env = append(os.Environ(), "BERTH_PHASES=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("run %d: %v: %s", i, err, stderr.String())
		}
		phases, goMain := parseStderr(stderr.String())
		evs, err := parseTrace(out)
		if err != nil {
			return err
		}
		split, err := splitStart(evs, phases, goMain)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tracestart: run %d: %v\n", i, err)
			continue
		}
		for _, s := range split {
			add(s.name, s.ms)
		}
		for _, p := range phases {
			add("phase "+p.name, p.ms)
		}
	}
	for _, name := range order {
		v := slices.Clone(steps[name])
		slices.Sort(v)
		fmt.Printf("%-78s median %7.2f  least %7.2f ms (%d runs)\n", name, v[len(v)/2], v[0], len(v))
	}
	return nil
}

type step struct {
	name string
	ms   float64
}

// parseStderr returns berthctl's phases and, when its init printed its
// inittrace, when the init's main began (ms after its Go runtime began).
func parseStderr(s string) (phases []step, goMain float64) {
	goMain = -1
	mains := 0
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "phase" {
			if ms, err := strconv.ParseFloat(f[2], 64); err == nil {
				phases = append(phases, step{f[1], ms})
			}
		}
		// The first is berthctl's own, the second its init's, which
		// berthctl copies from the container's stderr.
		if m := inittrace.FindStringSubmatch(sc.Text()); m != nil {
			if mains++; mains == 2 {
				goMain, _ = strconv.ParseFloat(m[1], 64)
			}
		}
	}
	return phases, goMain
}

func parseTrace(path string) ([]event, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var evs []event
	for _, l := range strings.Split(string(b), "\n") {
		m := eventLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, _ := strconv.ParseFloat(m[1], 64)
		evs = append(evs, event{at: at, comm: m[2], call: m[3], args: m[4]})
	}
	return evs, nil
}

func splitStart(evs []event, phases []step, goMain float64) ([]step, error) {
	var start float64 = -1
	for _, p := range phases {
		if p.name == "create.init/lc.Start" {
			start = p.ms
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no create.init/lc.Start phase: is BERTHCTL a berthctl with BERTH_PHASES?")
	}
	isInit := func(e event) bool { return strings.HasPrefix(e.comm, "runc:[2:INIT]") }
	first := func(after float64, pred func(event) bool) (float64, bool) {
		for _, e := range evs {
			if e.at >= after && pred(e) {
				return e.at, true
			}
		}
		return 0, false
	}
	last := func(pred func(event) bool) (float64, bool) {
		t, ok := 0.0, false
		for _, e := range evs {
			if pred(e) {
				t, ok = e.at, true
			}
		}
		return t, ok
	}
	fifo, ok := first(0, func(e event) bool {
		return e.call == "mknodat" && strings.Contains(e.args, "IFIFO") && !strings.HasPrefix(e.comm, "runc")
	})
	if !ok {
		return nil, fmt.Errorf("no exec FIFO made")
	}
	marks := []struct {
		name string
		at   func() (float64, bool)
	}{
		{"1 exec FIFO, sealed executable, clone of the init", func() (float64, bool) {
			return first(fifo, func(e event) bool { return e.call == "execve" && !strings.HasPrefix(e.comm, "true") })
		}},
		{"2 execve of the init, dynamic loader, until nsexec stage 0", func() (float64, bool) {
			return first(fifo, func(e event) bool { return strings.HasPrefix(e.comm, "runc:[0:PARENT") && e.call == "prctl" })
		}},
		{"3 nsexec stages 0 and 1 until stage 2 (caller: cgroups, bootstrap)", func() (float64, bool) {
			return first(fifo, func(e event) bool { return isInit(e) && e.call == "prctl" && strings.Contains(e.args, "SET_NAME") })
		}},
		{"4 stage 2 until the Go runtime starts", func() (float64, bool) {
			// The Go runtime's first system call names its memory.
			return first(fifo, func(e event) bool { return isInit(e) && e.call == "prctl" && strings.Contains(e.args, "1398164801") })
		}},
		{"5 Go runtime and package initialization until main", nil},
		{"6 libcontainer's init until the root filesystem", func() (float64, bool) {
			return first(fifo, func(e event) bool { return isInit(e) && e.call == "fsopen" })
		}},
		{"7 root filesystem: mounts, devices, until pivot_root", func() (float64, bool) {
			return first(fifo, func(e event) bool { return isInit(e) && e.call == "pivot_root" })
		}},
		{"8 masked and read-only paths, capabilities", func() (float64, bool) {
			return last(func(e event) bool {
				return isInit(e) && e.call == "prctl" && (strings.Contains(e.args, "CAP") || strings.Contains(e.args, "KEEPCAPS"))
			})
		}},
		{"9 seccomp filter built and loaded", func() (float64, bool) {
			return last(func(e event) bool { return isInit(e) && e.call == "seccomp" })
		}},
	}
	var out []step
	prev, goRuntime := fifo, -1.0
	for _, m := range marks {
		if m.at == nil { // the Go runtime's main: from the inittrace
			if goMain < 0 {
				continue // 5 and 6 go together
			}
			t := goRuntime + goMain
			out = append(out, step{m.name, t - prev})
			prev = t
			continue
		}
		t, ok := m.at()
		if !ok {
			return nil, fmt.Errorf("no mark for %q", m.name)
		}
		name := m.name
		if goMain < 0 && strings.HasPrefix(name, "6 ") {
			name = "5+6 Go runtime, package initialization, libcontainer's init until the root filesystem"
		}
		out = append(out, step{name, t - prev})
		if strings.HasPrefix(name, "4 ") {
			goRuntime = t
		}
		prev = t
	}
	out = append(out, step{"10 until Start returns (exec FIFO wait, state recorded)", fifo + start - prev})
	out = append(out, step{"lc.Start", start})
	return out, nil
}
