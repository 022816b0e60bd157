package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/volume"
)

// newFlagSet returns a set that reports errors to its caller instead of
// printing them and exiting: berthctl prints every failure the same way.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// envList is a repeatable --env K=V flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }

func (e *envList) Set(v string) error {
	k, _, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// byteSize is a --memory BYTES flag; set tells whether it was given.
type byteSize struct {
	n   int64
	set bool
}

func (b *byteSize) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatInt(b.n, 10)
}

func (b *byteSize) Set(v string) error {
	n, err := volume.ParseBytes(v)
	if err != nil {
		return err
	}
	b.n, b.set = n, true
	return nil
}

// cpuPeriod is the CFS period --cpus is expressed against, in µs.
const cpuPeriod = 100000

// cpus is a --cpus N flag: a positive number of CPUs, fractions allowed.
type cpus struct {
	n   float64
	set bool
}

func (c *cpus) String() string {
	if c == nil || !c.set {
		return ""
	}
	return strconv.FormatFloat(c.n, 'g', -1, 64)
}

func (c *cpus) Set(v string) error {
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 || n > math.MaxInt64/cpuPeriod {
		return fmt.Errorf("%q is not a positive number of CPUs", v)
	}
	c.n, c.set = n, true
	return nil
}

// quota is the CFS quota for the period, in µs.
func (c *cpus) quota() int64 { return int64(math.Round(c.n * cpuPeriod)) }

// optInt is an integer flag that knows whether it was given.
type optInt struct {
	n   int64
	set bool
}

func (o *optInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.n, 10)
}

func (o *optInt) Set(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer", v)
	}
	o.n, o.set = n, true
	return nil
}

// parseSignal reads a signal name (KILL, SIGKILL, any case) or number.
// The range of a number is the library's to check.
func parseSignal(v string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(v)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if s := unix.SignalNum(name); s != 0 {
		return s, nil
	}
	return 0, usageErrorf("unknown signal %q", v)
}

// parseUser reads UID[:GID]; without a GID the group is 0, as runc does.
func parseUser(v string) (*specs.User, error) {
	u, g, hasGID := strings.Cut(v, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return nil, usageErrorf("user %q is not UID[:GID]", v)
	}
	var gid uint64
	if hasGID {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			return nil, usageErrorf("user %q is not UID[:GID]", v)
		}
	}
	return &specs.User{UID: uint32(uid), GID: uint32(gid)}, nil
}

// parse parses a command's flags. -h prints the command's usage and ends
// it with errHelpShown.
func (a *app) parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(splitShortFlags(fs, args))
	if err == flag.ErrHelp {
		cmd, _ := lookupCommand(fs.Name())
		return a.showHelp("", cmd, fs)
	}
	if err != nil {
		return flagError(fs, err)
	}
	return nil
}

// splitShortFlags turns each group of one-letter boolean flags, as "-it",
// into the flags, "-i" "-t", as docker and most commands take them. Only
// flags are read, as fs.Parse reads them: from the first argument that is
// not a flag (nor a flag's value) on, nothing is changed. An argument that
// names a flag itself, or holds a letter that is not a boolean flag, is
// left as it is.
func splitShortFlags(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || len(arg) < 2 || arg[0] != '-' {
			return append(out, args[i:]...)
		}
		name := strings.TrimPrefix(arg[1:], "-")
		if f := fs.Lookup(name); f != nil {
			out = append(out, arg)
			if !isBool(f) && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		if arg[1] == '-' || strings.Contains(arg, "=") || !shortBools(fs, name) {
			out = append(out, arg)
			continue
		}
		for _, c := range name {
			out = append(out, "-"+string(c))
		}
	}
	return out
}

// isBool reports whether f is a boolean flag (given without a value).
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// shortBools reports whether every letter of s is a boolean flag of fs.
func shortBools(fs *flag.FlagSet, s string) bool {
	for _, c := range s {
		if f := fs.Lookup(string(c)); f == nil || !isBool(f) {
			return false
		}
	}
	return true
}

// interleaved reorders args so that fs.Parse takes every flag, wherever it
// comes among the positional arguments: the flags in their order, then
// "--", then the positional arguments in theirs. A "--" in args ends the
// flags (everything after it is positional), "-" alone is positional, and
// a flag that takes a value and is given without "=" takes the next
// argument, as the flag package reads it. Unknown flags are left for
// fs.Parse to refuse.
func interleaved(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			pos = append(pos, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimPrefix(arg[1:], "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if isBool(f) {
			continue
		}
		if i+1 == len(args) {
			// The value is missing: fs.Parse says so.
			return flags
		}
		i++
		flags = append(flags, args[i])
	}
	return append(append(flags, "--"), pos...)
}

// hasFlags tells whether fs has flags of its own (beside the global ones).
func (a *app) hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if !a.isGlobal(f.Name) {
			n++
		}
	})
	return n > 0
}

// commandArgs returns the command after its optional "--" separator.
func commandArgs(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

// exactArgs checks a command's positional arguments.
func exactArgs(fs *flag.FlagSet, n int) error {
	if fs.NArg() != n {
		cmd, _ := lookupCommand(fs.Name())
		return usageErrorf("%s: want %d argument(s), got %d (usage: berthctl %s %s)", fs.Name(), n, fs.NArg(), cmd.name, cmd.args)
	}
	return nil
}

// showHelp prints a command's usage and flags (prefix names its parent
// command, as "image ") and returns errHelpShown.
func (a *app) showHelp(prefix string, cmd command, fs *flag.FlagSet) error {
	fmt.Fprintf(a.stdout, "usage: berthctl %s%s %s\n\n%s\n", prefix, cmd.name, cmd.args, cmd.summary)
	if a.hasFlags(fs) {
		// The command's own flags; the global ones are berthctl help's.
		own := newFlagSet(fs.Name())
		fs.VisitAll(func(f *flag.Flag) {
			if !a.isGlobal(f.Name) {
				own.Var(f.Value, f.Name, f.Usage)
				own.Lookup(f.Name).DefValue = f.DefValue
			}
		})
		fmt.Fprintf(a.stdout, "\nflags:\n")
		own.SetOutput(a.stdout)
		own.PrintDefaults()
	}
	fmt.Fprintf(a.stdout, "\nGlobal flags (berthctl help) are accepted before or after %s.\n", fs.Name())
	return errHelpShown
}
