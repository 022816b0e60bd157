package runtime

import (
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

// ioctlBlock is a block of ioctl request numbers: those whose first bits
// (of 32, as the kernel reads the request) equal value's.
type ioctlBlock struct {
	name  string
	value uint32
	bits  int
}

func prefixMask(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

func (b ioctlBlock) contains(req uint32) bool {
	return req&prefixMask(b.bits) == b.value&prefixMask(b.bits)
}

// arg is the seccomp condition "the request is in b": a masked comparison
// of the low 32 bits only, as the kernel truncates the request to them (a
// plain 64-bit comparison could be dodged by setting the high bits).
func (b ioctlBlock) arg() specs.LinuxSeccompArg {
	return specs.LinuxSeccompArg{Index: 1, Value: uint64(prefixMask(b.bits)), ValueTwo: uint64(b.value & prefixMask(b.bits)), Op: specs.OpMaskedEqual}
}

// deniedIoctls are the ioctl requests no container may issue, whatever its
// seccomp profile: the loop device's (linux/loop.h, 0x4C00-0x4CFF). With
// them a process holding a raw loop device would release it, so that its
// number goes to another tenant's next attach while the container still
// holds the node and the cgroup rule; re-point it at another file; or make
// the host kernel scan a partition table it wrote (LO_FLAGS_PARTSCAN).
// They need only write access to the node, not a capability. The block
// layer's own requests that touch how the host reads a device (BLKRRPART,
// BLKPG, BLKROSET, BLKFLSBUF) need CAP_SYS_ADMIN in the initial user
// namespace, which no container has short of AllowPrivileged.
var deniedIoctls = []ioctlBlock{
	{"LOOP_* (LOOP_CLR_FD, LOOP_SET_STATUS64, LOOP_CHANGE_FD, LOOP_CONFIGURE...)", 0x4C00, 24},
}

// allowedIoctls covers every request outside deniedIoctls with as few
// blocks as a binary split gives (libseccomp has no masked "not equal").
// It is computed on first use: every container's init starts the program
// anew, and runs every package's initialization.
var allowedIoctls = sync.OnceValue(func() []ioctlBlock { return complementBlocks(deniedIoctls) })

func complementBlocks(denied []ioctlBlock) []ioctlBlock {
	var out []ioctlBlock
	var walk func(prefix uint32, bits int)
	walk = func(prefix uint32, bits int) {
		overlaps := false
		for _, d := range denied {
			if d.bits <= bits && d.contains(prefix) {
				return // wholly denied
			}
			if d.bits > bits && d.value&prefixMask(bits) == prefix {
				overlaps = true
			}
		}
		if !overlaps {
			out = append(out, ioctlBlock{value: prefix, bits: bits})
			return
		}
		walk(prefix, bits+1)
		walk(prefix|1<<(31-bits), bits+1)
	}
	walk(0, 0)
	return out
}

func deniedIoctl(req uint32) (ioctlBlock, bool) {
	for _, d := range deniedIoctls {
		if d.contains(req) {
			return d, true
		}
	}
	return ioctlBlock{}, false
}

// confineDeviceIoctls rewrites a seccomp profile so that none of its rules
// lets a denied ioctl through: a rule that allows ioctl is split into one
// rule per allowed block (libseccomp would let an unconditional allow
// override any conditional denial), and a profile that allows by default
// gets explicit denials.
func confineDeviceIoctls(sc *specs.LinuxSeccomp) error {
	var out []specs.LinuxSyscall
	for _, rule := range sc.Syscalls {
		if !slices.Contains(rule.Names, "ioctl") {
			out = append(out, rule)
			continue
		}
		rest := rule
		rest.Names = slices.DeleteFunc(slices.Clone(rule.Names), func(n string) bool { return n == "ioctl" })
		if len(rest.Names) > 0 {
			out = append(out, rest)
		}
		ioctl := rule
		ioctl.Names = []string{"ioctl"}
		if !slices.Contains(permissiveActions, rule.Action) {
			out = append(out, ioctl)
			continue
		}
		if slices.ContainsFunc(rule.Args, func(a specs.LinuxSeccompArg) bool { return a.Index == 1 }) {
			// The rule names its requests itself (as the rules this
			// function writes do): it may keep them as long as none
			// is denied.
			for _, a := range rule.Args {
				if a.Index != 1 {
					continue
				}
				if err := checkIoctlCondition(a); err != nil {
					return err
				}
			}
			out = append(out, ioctl)
			continue
		}
		for _, b := range allowedIoctls() {
			r := ioctl
			r.Args = append(slices.Clone(rule.Args), b.arg())
			out = append(out, r)
		}
	}
	if slices.Contains(permissiveActions, sc.DefaultAction) {
		eperm := uint(1) // EPERM
		for _, d := range deniedIoctls {
			deny := specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActErrno, ErrnoRet: &eperm, Args: []specs.LinuxSeccompArg{d.arg()}}
			if !slices.ContainsFunc(out, func(r specs.LinuxSyscall) bool { return reflect.DeepEqual(r, deny) }) {
				out = append(out, deny)
			}
		}
	}
	sc.Syscalls = out
	return nil
}

// applySeccomp gives the spec berth's seccomp confinement: Docker's default
// profile where the caller gave none, and the device ioctl rules in
// whatever profile it has. Every container gets them, not only those that
// hold a block device: containers pass descriptors to one another (a unix
// socket in a shared volume), and a loop device's descriptor is as good as
// its node. They cost a start about 3 ms (24 conditional rules for
// libseccomp to compile, scripts/bench-run.sh).
//
// The one exception is a profile that allows everything and says nothing
// else (driver.UnfilteredSeccomp) under p's AllowUnfilteredSeccomp and
// AllowPrivileged: it goes to the engine as it is, and the container runs
// without a filter.
func applySeccomp(id string, s *specs.Spec, p SecurityPolicy) error {
	if s.Linux.Seccomp == nil {
		sc, err := defaultSeccomp(s)
		if err != nil {
			return fmt.Errorf("container %q: default seccomp profile: %w", id, err)
		}
		s.Linux.Seccomp = sc
	}
	if p.AllowPrivileged && p.AllowUnfilteredSeccomp && driver.UnfilteredSeccomp(s.Linux.Seccomp) {
		return nil
	}
	if err := confineDeviceIoctls(s.Linux.Seccomp); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	return nil
}

// checkIoctlCondition refuses a condition on an ioctl's request that
// admits a denied one. Only the low 32 bits count: the kernel reads the
// request as an unsigned int, whatever the caller put above.
func checkIoctlCondition(a specs.LinuxSeccompArg) error {
	switch a.Op {
	case specs.OpEqualTo:
		if d, ok := deniedIoctl(uint32(a.Value)); ok {
			return fmt.Errorf("seccomp: request %#x (%s) is denied to every container: %w", a.Value, d.name, errdefs.ErrPermissionDenied)
		}
		return nil
	case specs.OpMaskedEqual:
		// {x: x&mask == value} meets the block {x: x&pm == pv} unless
		// they disagree on a bit both fix.
		mask, value := uint32(a.Value), uint32(a.ValueTwo)
		for _, d := range deniedIoctls {
			pm := prefixMask(d.bits)
			if (value^d.value)&mask&pm == 0 {
				return fmt.Errorf("seccomp: an ioctl rule for requests masked %#x equal to %#x admits %s, denied to every container: %w", a.Value, a.ValueTwo, d.name, errdefs.ErrPermissionDenied)
			}
		}
		return nil
	}
	return fmt.Errorf("seccomp: an ioctl rule comparing the request with %s cannot be kept apart from the denied device ioctls; use %s or %s: %w", a.Op, specs.OpEqualTo, specs.OpMaskedEqual, errdefs.ErrInvalidArgument)
}

// DefaultSeccompProfile returns the seccomp profile berth gives a container
// of spec whose caller gives none: Docker's default for the spec's
// capabilities, on the host's native system call ABI only, with the
// device ioctl rules.
// Every container also gets the device ioctl rules on top.
func DefaultSeccompProfile(spec *specs.Spec) (*specs.LinuxSeccomp, error) {
	sc, err := defaultSeccomp(spec)
	if err == nil {
		err = confineDeviceIoctls(sc)
	}
	return sc, err
}
