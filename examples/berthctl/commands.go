package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/berthrun/berth/runtime"
)

// command is one subcommand. run gets a fresh flag set named after it and
// the arguments after the command's name.
type command struct {
	name    string
	args    string
	summary string
	run     func(a *app, fs *flag.FlagSet, args []string) (int, error)
}

// commands lists the subcommands in the order help shows them. It is
// filled in init: its entries refer to help, which reads it.
var commands []command

func init() {
	commands = []command{
		{"run", "[--rm] [--name ID] (--rootfs DIR | --image REF) [--userns] [--memory BYTES] [--cpus N] [--env K=V]... [--volume SRC:DST[:ro][:raw]]... [--disk-size BYTES] [--log-max-size BYTES] [--log-max-files N] [-i] [-t] -- CMD [ARG...]",
			"create and start a container, forward its output and exit with its code", (*app).cmdRun},
		{"create", "[--name ID] (--rootfs DIR | --image REF) [--userns] [--memory BYTES] [--cpus N] [--env K=V]... [--volume SRC:DST[:ro][:raw]]... [--disk-size BYTES] [--log-max-size BYTES] [--log-max-files N] [-i] [-t] -- CMD [ARG...]",
			"create a container, print its ID; its output goes to its log", (*app).cmdCreate},
		{"start", "ID", "start a created container", (*app).cmdStart},
		{"exec", "[-i] [-t] [--env K=V]... [-w DIR] [-u UID[:GID]] ID -- CMD [ARG...]",
			"run a process in a running container and exit with its code", (*app).cmdExec},
		{"kill", "ID [SIGNAL]", "send a signal (default KILL) to a container's init", (*app).cmdKill},
		{"pause", "ID", "freeze a running container", (*app).cmdPause},
		{"resume", "ID", "thaw a paused container", (*app).cmdResume},
		{"update", "ID [--memory BYTES] [--cpus N] [--pids N]", "change a container's limits", (*app).cmdUpdate},
		{"stats", "ID", "print a container's memory, CPU and pids usage", (*app).cmdStats},
		{"ps", "[-q]", "list containers", (*app).cmdPs},
		{"stop", "[-t SECONDS] ID...", "stop running containers: TERM, then KILL after SECONDS (default 10)", (*app).cmdStop},
		{"rm", "[-f] ID...", "delete containers (-f kills running ones first)", (*app).cmdRm},
		{"logs", "[-f] [--tail N] ID", "print the output kept for a container (-f: and follow it until the container stops)", (*app).cmdLogs},
		{"wait", "ID", "wait for a container to stop and print its exit code", (*app).cmdWait},
		{"events", "", "print the containers' events, one line each, until interrupted", (*app).cmdEvents},
		{"resize-disk", "ID SIZE", "grow a container's own root disk while it runs (--backend parallels)", (*app).cmdResizeDisk},
		{"snapshot", "[--allow-retag] ID REF", "store a snapshot of a container's root filesystem as the image REF", (*app).cmdSnapshot},
		{"volume", "probe PATH", "name the filesystem on a block device or image file, and its size; exit 0 if it fits and the policy allows it", (*app).cmdVolume},
		{"attach", "ID SRC:DST[:ro][:raw]", "attach a volume to a running container", (*app).cmdAttach},
		{"detach", "ID DST", "detach the volume at DST from a running container", (*app).cmdDetach},
		{"image", imageUsage, "manage images: import, ls, rm, export, unpack, tag, pull, push (berthctl image -h)", (*app).cmdImage},
		{"version", "", "print berthctl's version", (*app).cmdVersion},
		{"help", "[COMMAND]", "print usage", (*app).cmdHelp},
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// simple runs op on the container named by the only argument.
func (a *app) simple(fs *flag.FlagSet, args []string, op func(context.Context, *runtime.Container) error) (int, error) {
	if err := a.parseN(fs, args, 1); err != nil {
		return 0, err
	}
	return a.onContainer(fs.Arg(0), op)
}

// parseN parses a command's flags and wants exactly n arguments.
func (a *app) parseN(fs *flag.FlagSet, args []string, n int) error {
	if err := a.parse(fs, args); err != nil {
		return err
	}
	return exactArgs(fs, n)
}

// onContainer runs op on the container named id.
func (a *app) onContainer(id string, op func(context.Context, *runtime.Container) error) (int, error) {
	ctx := context.Background()
	c, err := a.container(ctx, id)
	if err != nil {
		return 0, err
	}
	return 0, op(ctx, c)
}

func (a *app) cmdStart(fs *flag.FlagSet, args []string) (int, error) {
	return a.simple(fs, args, func(ctx context.Context, c *runtime.Container) error { return c.Start(ctx) })
}

func (a *app) cmdPause(fs *flag.FlagSet, args []string) (int, error) {
	return a.simple(fs, args, func(ctx context.Context, c *runtime.Container) error { return c.Pause(ctx) })
}

func (a *app) cmdResume(fs *flag.FlagSet, args []string) (int, error) {
	return a.simple(fs, args, func(ctx context.Context, c *runtime.Container) error { return c.Resume(ctx) })
}

func (a *app) cmdKill(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	if fs.NArg() != 1 && fs.NArg() != 2 {
		return 0, usageErrorf("kill: want ID [SIGNAL], got %d argument(s)", fs.NArg())
	}
	sig := syscall.SIGKILL
	if fs.NArg() == 2 {
		s, err := parseSignal(fs.Arg(1))
		if err != nil {
			return 0, err
		}
		sig = s
	}
	ctx := context.Background()
	c, err := a.container(ctx, fs.Arg(0))
	if err != nil {
		return 0, err
	}
	return 0, c.Kill(ctx, sig)
}

func (a *app) cmdUpdate(fs *flag.FlagSet, args []string) (int, error) {
	var (
		memory byteSize
		cpu    cpus
		pids   optInt
	)
	fs.Var(&memory, "memory", "memory limit in `BYTES` (suffixes k, m, g, t, p)")
	fs.Var(&cpu, "cpus", "CPU quota as a number `N` of CPUs (e.g. 0.5)")
	fs.Var(&pids, "pids", "maximum number `N` of processes (-1: no limit)")
	// The ID may come before the flags (the documented form) or after.
	var id string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if id == "" || fs.NArg() != 0 {
		return 0, usageErrorf("update: want one ID (usage: berthctl update ID [--memory BYTES] [--cpus N] [--pids N])")
	}
	var res runtime.Resources
	if memory.set {
		res.MemoryLimit = &memory.n
	}
	if cpu.set {
		q, p := cpu.quota(), uint64(cpuPeriod)
		res.CPUQuota, res.CPUPeriod = &q, &p
	}
	if pids.set {
		res.PidsLimit = &pids.n
	}
	if !memory.set && !cpu.set && !pids.set {
		return 0, usageErrorf("update: nothing to change (give --memory, --cpus or --pids)")
	}
	ctx := context.Background()
	c, err := a.container(ctx, id)
	if err != nil {
		return 0, err
	}
	return 0, c.Update(ctx, res)
}

func (a *app) cmdStats(fs *flag.FlagSet, args []string) (int, error) {
	return a.simple(fs, args, func(ctx context.Context, c *runtime.Container) error {
		s, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		limit := func(n uint64) string {
			if n == 0 {
				return "unlimited"
			}
			return strconv.FormatUint(n, 10)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "memory usage:\t%d\n", s.MemoryUsage)
		fmt.Fprintf(tw, "memory limit:\t%s\n", limit(s.MemoryLimit))
		fmt.Fprintf(tw, "cpu time:\t%s\n", time.Duration(s.CPUUsageNanos))
		fmt.Fprintf(tw, "pids:\t%d\n", s.Pids)
		fmt.Fprintf(tw, "pids limit:\t%s\n", limit(s.PidsLimit))
		return tw.Flush()
	})
}

func (a *app) cmdPs(fs *flag.FlagSet, args []string) (int, error) {
	quiet := fs.Bool("q", false, "print only IDs")
	if err := a.parseN(fs, args, 0); err != nil {
		return 0, err
	}
	rt, err := a.runtime()
	if err != nil {
		return 0, err
	}
	list, err := rt.List(context.Background())
	if err != nil {
		return 0, err
	}
	sort.Slice(list, func(i, j int) bool {
		if !list[i].CreatedAt.Equal(list[j].CreatedAt) {
			return list[i].CreatedAt.Before(list[j].CreatedAt)
		}
		return list[i].ID < list[j].ID
	})
	if *quiet {
		for _, i := range list {
			fmt.Fprintln(a.stdout, i.ID)
		}
		return 0, nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tPID\tCREATED\tEXIT")
	for _, i := range list {
		pid, exit := "-", "-"
		if i.Pid != 0 {
			pid = strconv.Itoa(i.Pid)
		}
		if i.Status == runtime.StatusStopped {
			exit = "?"
			if i.Exit != nil {
				exit = strconv.Itoa(i.Exit.Code)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.ID, i.Status, pid, i.CreatedAt.UTC().Format(time.RFC3339), exit)
	}
	return 0, tw.Flush()
}

// cmdStop stops every container named, as docker stop does, going on past
// failures like rm.
func (a *app) cmdStop(fs *flag.FlagSet, args []string) (int, error) {
	secs := fs.Int("t", 10, "seconds to wait after TERM before KILL")
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	if *secs < 0 {
		return 0, usageErrorf("stop: -t %d: want seconds, 0 or more", *secs)
	}
	if fs.NArg() == 0 {
		return 0, usageErrorf("stop: want at least one ID")
	}
	ctx := context.Background()
	var f failures
	for _, id := range fs.Args() {
		f.add(a.stop(ctx, id, time.Duration(*secs)*time.Second))
	}
	return 0, f.err()
}

func (a *app) stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := a.container(ctx, id)
	if err != nil {
		return err
	}
	return c.Stop(ctx, grace)
}

// cmdRm deletes every container named, going on past failures; it reports
// the first failure's class with every failure's message.
func (a *app) cmdRm(fs *flag.FlagSet, args []string) (int, error) {
	force := fs.Bool("f", false, "kill running or paused containers first")
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	if fs.NArg() == 0 {
		return 0, usageErrorf("rm: want at least one ID")
	}
	ctx := context.Background()
	var f failures
	for _, id := range fs.Args() {
		f.add(a.remove(ctx, id, *force))
	}
	return 0, f.err()
}

func (a *app) remove(ctx context.Context, id string, force bool) error {
	c, err := a.container(ctx, id)
	if err != nil {
		return err
	}
	return c.Delete(ctx, runtime.DeleteOptions{Force: force})
}

func (a *app) cmdLogs(fs *flag.FlagSet, args []string) (int, error) {
	follow := fs.Bool("f", false, "follow the output until the container stops")
	var tail optInt
	fs.Var(&tail, "tail", "print only the last `N` lines (0: none, with -f only what comes next)")
	if err := a.parseN(fs, args, 1); err != nil {
		return 0, err
	}
	opts := runtime.LogOptions{Follow: *follow}
	if tail.set {
		switch {
		case tail.n < 0:
			return 0, usageErrorf("logs: --tail %d: want a number of lines, 0 or more", tail.n)
		case tail.n == 0:
			opts.Tail = -1
		default:
			opts.Tail = int(min(tail.n, math.MaxInt32))
		}
	}
	return a.onContainer(fs.Arg(0), func(ctx context.Context, c *runtime.Container) error {
		return c.WriteLogs(ctx, a.stdout, opts)
	})
}

func (a *app) cmdWait(fs *flag.FlagSet, args []string) (int, error) {
	return a.simple(fs, args, func(ctx context.Context, c *runtime.Container) error {
		st, err := c.Wait(ctx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(a.stdout, st.Code)
		return err
	})
}

func (a *app) cmdVersion(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseN(fs, args, 0); err != nil {
		return 0, err
	}
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	fmt.Fprintf(a.stdout, "berthctl %s (%s; backends: %s)\n", v, goruntime.Version(), backendNames())
	return 0, nil
}

func (a *app) cmdHelp(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parse(fs, args); err != nil {
		return 0, err
	}
	switch fs.NArg() {
	case 0:
		a.usage(a.stdout)
	case 1:
		c, ok := lookupCommand(fs.Arg(0))
		if !ok {
			return 0, usageErrorf("help: unknown command %q", fs.Arg(0))
		}
		fmt.Fprintf(a.stdout, "usage: berthctl %s %s\n\n%s\n", c.name, c.args, c.summary)
	default:
		return 0, usageErrorf("help: want at most one command")
	}
	return 0, nil
}
