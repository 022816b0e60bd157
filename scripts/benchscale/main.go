// Command benchscale is scripts/bench-scale.sh's program: it creates and
// starts sleeping containers on the embedded engine, PARALLEL at a time,
// up to N (or until the host's available memory falls under a guard),
// printing at each mark the time per container and what each container
// costs the host: memory (the kernel's share apart), tasks against
// kernel.pid_max, descriptors, the supervisors' memory and what the
// library keeps in the calling process (its live heap). Then it lists
// them, removes them, and checks that nothing is left: no container, no
// cgroup in any hierarchy, no mount, no supervisor, no task.
//
//	benchscale [-n 10000] [-parallel 8] [-marks 10,1000,10000] [-min-available-mib 3072] ROOTFS
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime"
)

func main() {
	libcontainer.Init()
	n := flag.Int("n", 10000, "containers to run at once")
	par := flag.Int("parallel", 8, "creates (and removes) at a time")
	marksFlag := flag.String("marks", "10,1000,10000", "counts at which to print the costs")
	guard := flag.Int("min-available-mib", 3072, "stop creating when MemAvailable falls under this")
	window := flag.Int("window", 16, "creates timed before each mark")
	listProfile := flag.String("list-profile", "", "write a CPU profile of the lists to this file")
	share := flag.String("share", "", "namespaces the containers share with the host (network,ipc,cgroup), to see what each costs the kernel")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: benchscale [flags] ROOTFS")
		os.Exit(2)
	}
	for _, ns := range strings.Split(*share, ",") {
		if ns != "" {
			shared[specs.LinuxNamespaceType(ns)] = true
		}
	}
	if err := run(flag.Arg(0), *n, *par, parseMarks(*marksFlag, *n), *guard, *window, *listProfile); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

func parseMarks(s string, n int) []int {
	var marks []int
	for _, f := range strings.Split(s, ",") {
		if m, err := strconv.Atoi(f); err == nil && m > 0 && m <= n {
			marks = append(marks, m)
		}
	}
	if len(marks) == 0 || marks[len(marks)-1] != n {
		marks = append(marks, n)
	}
	sort.Ints(marks)
	return marks
}

const cgroupParent = "berth-scale"

// shared are the namespaces the containers share with the host.
var shared = map[specs.LinuxNamespaceType]bool{}

// spec is a sleeping container's.
func spec(rootfs string) *specs.Spec {
	s := runtime.DefaultSpec(rootfs, "/bin/sleep", "100000000")
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return shared[ns.Type] })
	return s
}

func run(rootfs string, n, par int, marks []int, guardMiB, window int, listProfile string) error {
	ctx := context.Background()
	root, err := os.MkdirTemp("/var/tmp", "berth-scale.")
	if err != nil {
		return err
	}
	_ = os.Chmod(root, 0o711)
	defer os.RemoveAll(root)
	engine, err := libcontainer.Open(root, libcontainer.WithCgroupParent(cgroupParent))
	if err != nil {
		return err
	}
	opts := []runtime.Option{runtime.WithStateDir(root)}
	if len(shared) > 0 {
		// A measure of what the namespaces cost, by name.
		opts = append(opts, runtime.WithSecurityPolicy(runtime.SecurityPolicy{AllowHostNamespaces: true}))
	}
	rt, err := runtime.New(engine, opts...)
	if err != nil {
		return err
	}
	defer rt.Close()
	base := sample(root)
	fmt.Printf("scale: up to %d sleeping containers, %d at a time; kernel.pid_max %d; memory guard: MemAvailable >= %d MiB\n", n, par, readInt("/proc/sys/kernel/pid_max"), guardMiB)
	if len(shared) > 0 {
		fmt.Printf("namespaces shared with the host: %v\n", slices.Sorted(maps.Keys(shared)))
	}
	fmt.Printf("%8s %10s %10s %10s %10s %10s %10s %10s %10s %9s %8s\n", "running", "ms/create", "MB/ctr", "kernel", "slab", "percpu", "superv.", "init", "caller", "tasks/ctr", "fds/ctr")

	var ids []string
	var mu sync.Mutex
	var stopped atomic.Bool
	// SIGINT or SIGTERM stops the creates: what runs is measured, listed
	// and removed as at the end.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	reason := fmt.Sprintf("MemAvailable under %d MiB", guardMiB)
	go func() {
		s := <-sigs
		mu.Lock()
		reason = "interrupted by " + s.String()
		mu.Unlock()
		stopped.Store(true)
	}()
	created := 0
	for _, mark := range marks {
		// Up to the window before the mark untimed, then the window
		// timed: the cost of a create when about mark are running.
		from := max(created, mark-window)
		if err := createN(ctx, rt, rootfs, created, from, par, guardMiB, &ids, &mu, &stopped); err != nil {
			return cleanupAfter(ctx, rt, ids, par, err)
		}
		created = len(ids)
		t0 := time.Now()
		if err := createN(ctx, rt, rootfs, created, mark, par, guardMiB, &ids, &mu, &stopped); err != nil {
			return cleanupAfter(ctx, rt, ids, par, err)
		}
		elapsed := time.Since(t0)
		timed := len(ids) - created
		created = len(ids)
		time.Sleep(time.Second) // let the starts settle
		s := sample(root)
		per := func(a, b int64) float64 { return float64(a-b) / float64(created) / 1e6 }
		ms := 0.0
		if timed > 0 {
			ms = float64(elapsed.Microseconds()) / 1000 / float64(timed)
		}
		fmt.Printf("%8d %10.1f %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %9.2f %8.2f\n", created, ms,
			per(s.used, base.used), per(s.kernel, base.kernel), per(s.slab, base.slab), per(s.percpu, base.percpu),
			per(s.supervisorPss, base.supervisorPss), per(s.initPss, base.initPss), per(s.callerHeap, base.callerHeap),
			float64(s.tasks-base.tasks)/float64(created), float64(s.supervisorFds-base.supervisorFds)/float64(created))
		if stopped.Load() {
			mu.Lock()
			fmt.Printf("stopped at %d containers: %s\n", created, reason)
			mu.Unlock()
			break
		}
	}
	if listProfile != "" {
		f, err := os.Create(listProfile)
		if err != nil {
			return cleanupAfter(ctx, rt, ids, par, err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return cleanupAfter(ctx, rt, ids, par, err)
		}
	}
	// Twice: the first list is what a new process pays, the second what
	// a process that listed before does.
	for _, which := range []string{"first", "again"} {
		t0 := time.Now()
		list, err := rt.List(ctx)
		if err != nil {
			pprof.StopCPUProfile()
			return cleanupAfter(ctx, rt, ids, par, err)
		}
		running := 0
		for _, c := range list {
			if c.Status == runtime.StatusRunning {
				running++
			}
		}
		fmt.Printf("list (%s): %d containers (%d running) in %.0f ms\n", which, len(list), running, float64(time.Since(t0).Microseconds())/1000)
	}
	pprof.StopCPUProfile()
	t0 := time.Now()
	if err := removeAll(ctx, rt, ids, par); err != nil {
		return err
	}
	fmt.Printf("rm -f: %.1f ms per container\n", float64(time.Since(t0).Microseconds())/1000/float64(max(1, len(ids))))
	return leftovers(root, base)
}

// createN creates and starts containers from..to-1, par at a time.
func createN(ctx context.Context, rt *runtime.Runtime, rootfs string, from, to, par, guardMiB int, ids *[]string, mu *sync.Mutex, stopped *atomic.Bool) error {
	var errMu sync.Mutex
	var firstErr error
	each(par, from, to, func(i int) bool {
		if stopped.Load() {
			return false
		}
		if i%par == 0 && memAvailableMiB() < guardMiB {
			stopped.Store(true)
			return false
		}
		if i > 0 && i%500 == 0 {
			fmt.Fprintf(os.Stderr, "scale: %d created, MemAvailable %d MiB\n", i, memAvailableMiB())
		}
		id := fmt.Sprintf("scale-%05d", i)
		c, err := rt.Create(ctx, id, &runtime.Config{Spec: spec(rootfs)})
		if err == nil {
			mu.Lock()
			*ids = append(*ids, id)
			mu.Unlock()
			err = c.Start(ctx)
		}
		errMu.Lock()
		defer errMu.Unlock()
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("container %d: %w", i, err)
		}
		return firstErr == nil
	})
	return firstErr
}

func removeAll(ctx context.Context, rt *runtime.Runtime, ids []string, par int) error {
	var mu sync.Mutex
	var errs []error
	each(par, 0, len(ids), func(i int) bool {
		c, err := rt.Get(ctx, ids[i])
		if err == nil {
			err = c.Delete(ctx, runtime.DeleteOptions{Force: true})
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", ids[i], err))
			mu.Unlock()
		}
		return true
	})
	return errors.Join(errs...)
}

// each calls f for from..to-1, par calls at a time, each worker until f
// returns false.
func each(par, from, to int, f func(i int) bool) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || !f(i) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func cleanupAfter(ctx context.Context, rt *runtime.Runtime, ids []string, par int, err error) error {
	fmt.Printf("stopped at %d containers: %v\n", len(ids), err)
	return errors.Join(err, removeAll(ctx, rt, ids, par))
}

// stats is what the host spends, in bytes, tasks and descriptors.
type stats struct {
	used, kernel, slab, percpu int64
	supervisorPss, initPss     int64
	// callerHeap is this program's live heap: what the library keeps
	// in the calling process.
	callerHeap int64
	// tasks are the host's; callerThreads this program's own (the Go
	// runtime keeps the threads it made for parallel creates).
	tasks, callerThreads, mounts int
	supervisorFds                int
	cgroups                      int
}

func sample(root string) stats {
	m := meminfo()
	s := stats{
		// Memory in use other than the page cache and what the
		// kernel can reclaim.
		used:   (m["MemTotal"] - m["MemFree"] - m["Buffers"] - m["Cached"] - m["SReclaimable"]) * 1024,
		slab:   m["SUnreclaim"] * 1024,
		percpu: m["Percpu"] * 1024,
		kernel: (m["SUnreclaim"] + m["Percpu"] + m["KernelStack"] + m["PageTables"] + m["VmallocUsed"]) * 1024,
	}
	s.tasks = readTasks()
	s.callerThreads = countDirs("/proc/self/task")
	var ms goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&ms)
	s.callerHeap = int64(ms.HeapAlloc)
	s.mounts = countLines("/proc/self/mountinfo")
	s.cgroups = countCgroups()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		switch {
		case len(args) > 2 && args[1] == "berth-supervisor" && args[2] == root:
			s.supervisorPss += pss(pid)
			if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				s.supervisorFds += len(fds)
			}
		case len(args) > 0 && args[0] == "/bin/sleep":
			s.initPss += pss(pid)
		}
	}
	return s
}

func meminfo() map[string]int64 {
	m := map[string]int64{}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) > 0 {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			m[k] = n
		}
	}
	return m
}

func memAvailableMiB() int { return int(meminfo()["MemAvailable"] / 1024) }

func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func readTasks() int {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0
	}
	_, t, _ := strings.Cut(f[3], "/")
	n, _ := strconv.Atoi(t)
	return n
}

// countDirs counts the entries of dir.
func countDirs(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

func readInt(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// countCgroups counts the cgroups under cgroupParent in every hierarchy.
func countCgroups() int {
	n := 0
	hs, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hs {
		dir := filepath.Join("/sys/fs/cgroup", h.Name(), cgroupParent)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				n++
			}
		}
	}
	return n
}

// leftovers checks that nothing the containers had is left once the
// supervisors had time to quit.
func leftovers(root string, base stats) error {
	deadline := time.Now().Add(15 * time.Second)
	var s stats
	for {
		s = sample(root)
		ents, _ := os.ReadDir(filepath.Join(root, "containers"))
		var left []string
		if len(ents) > 0 {
			left = append(left, fmt.Sprintf("%d container directories", len(ents)))
		}
		if s.cgroups > base.cgroups {
			left = append(left, fmt.Sprintf("%d cgroups", s.cgroups-base.cgroups))
		}
		if s.mounts > base.mounts {
			left = append(left, fmt.Sprintf("%d mounts", s.mounts-base.mounts))
		}
		if s.supervisorFds > 0 {
			left = append(left, "a supervisor")
		}
		if len(left) == 0 {
			fmt.Printf("after rm -f: nothing left (tasks %+d, of which this program's own threads %+d; mounts %+d, cgroups %+d, supervisors gone)\n", s.tasks-base.tasks, s.callerThreads-base.callerThreads, s.mounts-base.mounts, s.cgroups-base.cgroups)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("left behind after rm -f: %s", strings.Join(left, ", "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
