package runtime

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/volume"
)

// SecurityPolicy is what a container's spec may ask for beyond the
// confinement berth gives by default. The zero value is the default: what
// DefaultSpec asks for and nothing that reaches past the container.
type SecurityPolicy struct {
	// AllowPrivileged admits, as Docker's --privileged does, a spec that
	// loosens the container's confinement: capabilities beyond
	// DefaultCapabilities (or no capability sets at all, which keeps
	// every one), hooks (they run as root on the host), joining
	// namespaces by path or sharing the host's PID, IPC, network or mount
	// namespace, a cgroups path of its own choosing, devices and device
	// cgroup rules, writable sysfs or cgroup mounts, proc, sysfs or cgroup
	// mounted outside /proc, /sys and /sys/fs/cgroup, fewer masked or
	// read-only paths than DefaultSpec, and a seccomp profile that does
	// more than narrow the default one (allows by default, hands calls to
	// an agent, admits another ABI, allows a call the default denies),
	// AppArmor's unconfined profile or an unconfined SELinux type, a
	// negative oom_score_adj, and a bind or volume whose propagation is
	// shared (rshared: what the container mounts under it appears on the
	// host). Without it each is refused with permission-denied.
	//
	// Some refusals hold even then: bind mounts of kernel interface
	// filesystems (proc, sysfs, cgroup, devtmpfs...), block devices outside
	// the volume policy, and the seccomp rules that keep a container from
	// releasing, re-pointing or re-flagging a loop device (those unless
	// AllowUnfilteredSeccomp too).
	AllowPrivileged bool
	// AllowHostNamespaces admits, without AllowPrivileged, a spec that
	// shares the host's network, PID or IPC namespace (one that leaves
	// them out of its namespaces), as Kubernetes' hostNetwork, hostPID
	// and hostIPC do; the UTS namespace may be the host's under any
	// policy. Everything else stays as the policy says: the mount
	// namespace is the container's own, the user namespace comes only
	// from Config.UserNamespace or Config.Join, namespaces are never
	// joined by path, and so on. It also admits joining (Config.Join) a
	// container that shares one of those with the host.
	//
	// It is meant for trusted workloads: in the host's network namespace
	// the default CAP_NET_RAW reaches the host's traffic (drop it unless
	// needed); in the host's PID namespace root without a user namespace
	// can signal the host's processes and, through /proc/<pid>/root of
	// those running as root, read the host's files; in the host's IPC
	// namespace the container reaches the host's shared memory.
	AllowHostNamespaces bool
	// AllowUnfilteredSeccomp runs a container whose seccomp profile is
	// exactly {"defaultAction": "SCMP_ACT_ALLOW"}, with no rules,
	// architectures, flags, errno or agent (driver.UnfilteredSeccomp),
	// without any seccomp filter: /proc/self/status says "Seccomp: 0", as
	// Kubernetes' Unconfined profile and Docker's seccomp=unconfined
	// expect. It admits nothing by itself: such a profile loosens
	// confinement and needs AllowPrivileged as well (without it the spec is
	// refused, switch or not); every other profile, the default one
	// included, keeps the loop device rules; and without the switch an
	// allow-all profile runs under a filter that allows everything but
	// them.
	//
	// What it gives up is those rules, for that container: with write
	// access to a loop device, by its node or by a descriptor another
	// container hands it (over a unix socket on a shared volume), the
	// container can release the device (LOOP_CLR_FD: its number goes to
	// the next attach, another tenant's volume, while the container still
	// holds the node), re-point it at another file it can open
	// (LOOP_CHANGE_FD, LOOP_CONFIGURE), or have the host's kernel scan a
	// partition table it wrote (LO_FLAGS_PARTSCAN). With no filter, the
	// 32-bit and x32 system call ABIs are open too (where the kernel has
	// them), as a privileged profile admitting them would leave them. Set it only where no container holding a
	// loop device (raw-block volumes of image files) can pass its
	// descriptor to an unfiltered one.
	AllowUnfilteredSeccomp bool
}

// WithSecurityPolicy sets what specs may ask for (default: the zero
// SecurityPolicy).
func WithSecurityPolicy(p SecurityPolicy) Option {
	return func(o *options) error {
		o.security = p
		return nil
	}
}

// SecurityPolicy returns what specs may ask for on this runtime.
func (r *Runtime) SecurityPolicy() SecurityPolicy { return r.security }

// DefaultCapabilities is the capability set Docker grants a container by
// default, and the most a spec may hold without AllowPrivileged.
func DefaultCapabilities() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
		"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// defaultMaskedPaths and defaultReadonlyPaths keep kernel controls under
// /proc and /sys out of reach; a spec without AllowPrivileged keeps all of
// them.
var (
	defaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
		"/proc/scsi", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// privateNamespaces are the namespaces a container must have of its own
// without AllowPrivileged: sharing the host's would let its root signal
// host processes, reach the host's IPC objects or sniff the host's network
// (CAP_NET_RAW), or see and change the host's mounts. AllowHostNamespaces
// lifts the rule for all but the mount namespace.
var privateNamespaces = []specs.LinuxNamespaceType{
	specs.PIDNamespace, specs.IPCNamespace, specs.NetworkNamespace, specs.MountNamespace,
}

// hostNamespaceAdmitted reports whether p lets a container share the
// host's namespace of type t.
func hostNamespaceAdmitted(p SecurityPolicy, t specs.LinuxNamespaceType) bool {
	switch {
	case p.AllowPrivileged || !slices.Contains(privateNamespaces, t):
		return true
	default:
		return p.AllowHostNamespaces && t != specs.MountNamespace
	}
}

// privilegeChecks each name one way a spec can loosen confinement, and
// report it (nil when the spec does not).
var privilegeChecks = []func(*specs.Spec) error{
	checkCapabilities,
	checkHooks,
	checkNamespacePaths,
	checkCgroupsPath,
	checkDevices,
	checkKernelMounts,
	checkMaskedPaths,
	checkSeccompConfined,
	checkMACConfined,
	checkOOMScore,
	checkSharedBinds,
}

// checkSharedBinds refuses a bind whose propagation is shared: what a
// container that can mount mounts under it appears on the host, under
// the source, with whatever flags it chose (a setuid binary, a device
// node).
func checkSharedBinds(s *specs.Spec) error {
	for _, m := range s.Mounts {
		if isBindMount(m) && bindVolumeSpec(m).Propagation == volume.PropagationShared {
			return fmt.Errorf("the bind at %s propagates the container's mounts to the host (shared propagation)", m.Destination)
		}
	}
	return nil
}

// checkVolumeSecurity refuses, with permission-denied, the volumes the
// policy does not allow: those whose propagation is shared
// (checkSharedBinds).
func checkVolumeSecurity(id string, vols []volume.Spec, p SecurityPolicy) error {
	if p.AllowPrivileged {
		return nil
	}
	for _, v := range vols {
		if v.Propagation == volume.PropagationShared {
			return fmt.Errorf("container %q: the volume at %s propagates the container's mounts to the host (shared propagation; only under the AllowPrivileged policy switch): %w", id, v.Destination, errdefs.ErrPermissionDenied)
		}
	}
	return nil
}

// unconfinedTypes are SELinux process types that the policy leaves
// unconfined.
var unconfinedTypes = []string{"spc_t", "unconfined_t", "kernel_t", "container_runtime_t"}

// checkMACConfined refuses a spec that asks the engine to lift the
// host's mandatory access control (AppArmor's "unconfined", an SELinux
// type the policy does not confine).
func checkMACConfined(s *specs.Spec) error {
	if s.Process.ApparmorProfile == "unconfined" {
		return fmt.Errorf("AppArmor profile %q", s.Process.ApparmorProfile)
	}
	if parts := strings.Split(s.Process.SelinuxLabel, ":"); len(parts) >= 3 && slices.Contains(unconfinedTypes, parts[2]) {
		return fmt.Errorf("SELinux label %q is unconfined", s.Process.SelinuxLabel)
	}
	return nil
}

// checkOOMScore refuses a negative oom_score_adj: under memory pressure
// the host's own processes would be killed before the container's.
func checkOOMScore(s *specs.Spec) error {
	if adj := s.Process.OOMScoreAdj; adj != nil && *adj < 0 {
		return fmt.Errorf("oom_score_adj %d is below zero", *adj)
	}
	return nil
}

// checkSecurity refuses, with permission-denied, whatever the policy does
// not allow.
func checkSecurity(id string, s *specs.Spec, p SecurityPolicy) error {
	if p.AllowPrivileged {
		return nil
	}
	for _, check := range privilegeChecks {
		if err := check(s); err != nil {
			return fmt.Errorf("container %q: %v (only under the AllowPrivileged policy switch): %w", id, err, errdefs.ErrPermissionDenied)
		}
	}
	for _, t := range privateNamespaces {
		if !hasNamespace(s, t) && !hostNamespaceAdmitted(p, t) {
			sw := "AllowHostNamespaces or AllowPrivileged"
			if t == specs.MountNamespace {
				sw = "AllowPrivileged"
			}
			return fmt.Errorf("container %q: sharing the host's %s namespace (only under the %s policy switch): %w", id, t, sw, errdefs.ErrPermissionDenied)
		}
	}
	return nil
}

func checkCapabilities(s *specs.Spec) error {
	c := s.Process.Capabilities
	if c == nil {
		// The engine then changes nothing: the process keeps every
		// capability root has.
		return fmt.Errorf("no capability sets (the process would keep every capability)")
	}
	allowed := DefaultCapabilities()
	for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
		for _, name := range set {
			if !slices.Contains(allowed, strings.ToUpper(name)) {
				return fmt.Errorf("capability %s is beyond the default set", name)
			}
		}
	}
	return nil
}

func checkHooks(s *specs.Spec) error {
	h := s.Hooks
	if h == nil {
		return nil
	}
	//nolint:staticcheck // Prestart is deprecated but still run by runc.
	if len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+len(h.StartContainer)+len(h.Poststart)+len(h.Poststop) > 0 {
		return fmt.Errorf("hooks run as root on the host")
	}
	return nil
}

// checkNamespacePaths refuses namespaces joined by path: any process's,
// the host's included (Config.Join shares another container's instead).
func checkNamespacePaths(s *specs.Spec) error {
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			return fmt.Errorf("joining the %s namespace at %s", ns.Type, ns.Path)
		}
	}
	return nil
}

// hasNamespace reports whether s lists a namespace of type t (its own, or
// joined).
func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	return slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
}

func checkCgroupsPath(s *specs.Spec) error {
	if s.Linux.CgroupsPath != "" {
		return fmt.Errorf("cgroups path %q (the backend places each container in a cgroup of its own)", s.Linux.CgroupsPath)
	}
	return nil
}

func checkDevices(s *specs.Spec) error {
	for _, d := range s.Linux.Devices {
		return fmt.Errorf("device %s", d.Path)
	}
	if r := s.Linux.Resources; r != nil {
		for _, d := range r.Devices {
			if d.Allow {
				return fmt.Errorf("devices cgroup rule allowing %s %s", d.Type, d.Access)
			}
		}
	}
	return nil
}

// checkKernelMounts keeps the container's own kernel interfaces as Docker
// mounts them: proc only at /proc, sysfs only at /sys and cgroup only
// under /sys/fs/cgroup (where the masked and read-only paths apply), sysfs
// and cgroup read-only.
func checkKernelMounts(s *specs.Spec) error {
	for _, m := range s.Mounts {
		switch m.Type {
		case "proc":
			if filepath.Clean(m.Destination) != "/proc" {
				return fmt.Errorf("proc mounted at %s, where the masked and read-only paths do not apply", m.Destination)
			}
		case "sysfs", "cgroup", "cgroup2":
			if !readOnly(m.Options) {
				return fmt.Errorf("a writable %s mount at %s", m.Type, m.Destination)
			}
			// Where the masked paths (/sys/firmware...) apply.
			want := "/sys"
			if m.Type != "sysfs" {
				want = "/sys/fs/cgroup"
			}
			if d := filepath.Clean(m.Destination); d != want && !strings.HasPrefix(d, want+"/") {
				return fmt.Errorf("%s mounted at %s, where the masked paths do not apply", m.Type, m.Destination)
			}
		}
	}
	return nil
}

// readOnly reports whether mount options end up read-only: of "ro" and
// "rw", the last one given wins, as the engines apply them in order.
func readOnly(opts []string) bool {
	ro := false
	for _, o := range opts {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
	}
	return ro
}

func checkMaskedPaths(s *specs.Spec) error {
	for _, p := range defaultMaskedPaths {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			return fmt.Errorf("%s is not masked", p)
		}
	}
	for _, p := range defaultReadonlyPaths {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) && !slices.Contains(s.Linux.MaskedPaths, p) {
			return fmt.Errorf("%s is not read-only", p)
		}
	}
	return nil
}

// permissiveActions let a system call through (or hand it to a tracer or
// agent that may).
var permissiveActions = []specs.LinuxSeccompAction{specs.ActAllow, specs.ActLog, specs.ActTrace, specs.ActNotify}

// checkSeccompConfined admits a caller's seccomp profile only if it narrows
// the default one: a profile that allows by default is unconfined, and one
// that allows a system call the default profile (for the same
// capabilities) denies, or allows under fewer conditions, widens it.
func checkSeccompConfined(s *specs.Spec) error {
	sc := s.Linux.Seccomp
	if sc == nil {
		return nil
	}
	if slices.Contains(permissiveActions, sc.DefaultAction) {
		return fmt.Errorf("a seccomp profile whose default action is %s (unconfined)", sc.DefaultAction)
	}
	if sc.ListenerPath != "" {
		return fmt.Errorf("a seccomp profile handing calls to an agent (%s)", sc.ListenerPath)
	}
	for _, f := range sc.Flags {
		if f != specs.LinuxSeccompFlagLog {
			return fmt.Errorf("seccomp flag %s", f)
		}
	}
	def, err := defaultSeccomp(s)
	if err != nil {
		return err
	}
	for _, a := range sc.Architectures {
		// Another ABI reaches the same calls under other numbers and
		// other conventions (i386's socketcall carries the socket's
		// domain where the default profile cannot see it).
		if !slices.Contains(def.Architectures, a) {
			return fmt.Errorf("a seccomp profile admitting the %s system call ABI", a)
		}
	}
	for _, rule := range sc.Syscalls {
		if !slices.Contains(permissiveActions, rule.Action) {
			continue
		}
		for _, name := range rule.Names {
			if name == "ioctl" {
				continue // narrowed to the allowed requests whatever it says
			}
			if !defaultAllows(def, name, rule.Args) {
				return fmt.Errorf("a seccomp profile allowing %s, which the default profile denies (or allows under narrower conditions)", name)
			}
		}
	}
	return nil
}

// defaultAllows reports whether the default profile def lets name through
// whenever a rule with args would: unconditionally, or under a rule with
// the very same conditions.
func defaultAllows(def *specs.LinuxSeccomp, name string, args []specs.LinuxSeccompArg) bool {
	for _, r := range def.Syscalls {
		if !slices.Contains(r.Names, name) || !slices.Contains(permissiveActions, r.Action) {
			continue
		}
		if len(r.Args) == 0 || reflect.DeepEqual(r.Args, args) {
			return true
		}
	}
	return false
}

// confine checks a container's own copy of its spec against the security
// policy and the host paths it names, then gives it berth's seccomp
// confinement.
func (r *Runtime) confine(id string, s *specs.Spec) error {
	if err := checkSecurity(id, s, r.security); err != nil {
		return err
	}
	if err := checkHostPaths(id, s); err != nil {
		return err
	}
	return applySeccomp(id, s, r.security)
}
