package docker

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

// translation is a container in Docker's terms, built from a checked OCI
// spec by the rules below.
type translation struct {
	config *container.Config
	host   *container.HostConfig
	// daemon facts the rules need
	remap *idMapping // the daemon's userns-remap mapping, nil without
	// cgroupns: the negotiated API has CgroupnsMode (1.41+)
	cgroupns bool
	// mapBind makes an ID-mapped mount of a bind source on the host and
	// returns its path (nil: ID-mapped binds are refused).
	mapBind func(src string) (string, error)
}

// translate turns spec into Docker's container and host configs. Each rule
// translates one part of the spec; what Docker cannot express is refused
// with not-implemented, never dropped (see the table in doc.go).
func translate(spec *specs.Spec, t *translation) error {
	if t.config == nil {
		t.config = &container.Config{}
	}
	if t.host == nil {
		t.host = &container.HostConfig{}
	}
	for _, u := range unsupported {
		if u.present(spec) {
			return notImplemented("spec: Docker cannot express %s", u.what)
		}
	}
	for _, rule := range specRules {
		if err := rule(spec, t); err != nil {
			return err
		}
	}
	return nil
}

// specRules translate the spec part by part, in this order.
var specRules = []func(*specs.Spec, *translation) error{
	translateProcess,
	translateCapabilities,
	translateRlimits,
	translateSecurity,
	translateRoot,
	translateNamespaces,
	translateMounts,
	translateResources,
	translateDevices,
}

// unsupported lists the parts of an OCI spec Docker has no setting for.
var unsupported = []struct {
	what    string
	present func(*specs.Spec) bool
}{
	{"hooks", func(s *specs.Spec) bool { return s.Hooks != nil }},
	{"annotations", func(s *specs.Spec) bool { return len(s.Annotations) > 0 }},
	{"a section for another platform", func(s *specs.Spec) bool {
		return s.Solaris != nil || s.Windows != nil || s.VM != nil || s.ZOS != nil || s.FreeBSD != nil
	}},
	{"a umask", func(s *specs.Spec) bool { return s.Process.User.Umask != nil }},
	{"a user name", func(s *specs.Spec) bool { return s.Process.User.Username != "" }},
	{"ambient or inheritable capabilities", func(s *specs.Spec) bool {
		c := s.Process.Capabilities
		return c != nil && (len(c.Ambient) > 0 || len(c.Inheritable) > 0)
	}},
	{"a scheduler policy", func(s *specs.Spec) bool { return s.Process.Scheduler != nil }},
	{"an SELinux process label", func(s *specs.Spec) bool { return s.Process.SelinuxLabel != "" }},
	{"an I/O priority", func(s *specs.Spec) bool { return s.Process.IOPriority != nil }},
	{"an exec CPU affinity", func(s *specs.Spec) bool { return s.Process.ExecCPUAffinity != nil }},
	{"a cgroups path (Docker names the container's cgroup)", func(s *specs.Spec) bool { return s.Linux.CgroupsPath != "" }},
	{"network devices", func(s *specs.Spec) bool { return len(s.Linux.NetDevices) > 0 }},
	{"a root filesystem propagation", func(s *specs.Spec) bool { return s.Linux.RootfsPropagation != "" }},
	{"a mount label", func(s *specs.Spec) bool { return s.Linux.MountLabel != "" }},
	{"Intel RDT", func(s *specs.Spec) bool { return s.Linux.IntelRdt != nil }},
	{"a memory policy", func(s *specs.Spec) bool { return s.Linux.MemoryPolicy != nil }},
	{"a personality", func(s *specs.Spec) bool { return s.Linux.Personality != nil }},
	{"time namespace offsets", func(s *specs.Spec) bool { return len(s.Linux.TimeOffsets) > 0 }},
	{"seccomp flags or a listener", func(s *specs.Spec) bool {
		sc := s.Linux.Seccomp
		return sc != nil && (len(sc.Flags) > 0 || sc.ListenerPath != "" || sc.ListenerMetadata != "")
	}},
	{"kernel memory limits", func(s *specs.Spec) bool {
		m := memory(s)
		return m != nil && (m.Kernel != nil || m.KernelTCP != nil)
	}},
	{"memory use_hierarchy or check-before-update", func(s *specs.Spec) bool {
		m := memory(s)
		return m != nil && (m.UseHierarchy != nil || m.CheckBeforeUpdate != nil)
	}},
	{"a CPU burst or idle setting", func(s *specs.Spec) bool {
		r := s.Linux.Resources
		return r != nil && r.CPU != nil && (r.CPU.Burst != nil || r.CPU.Idle != nil)
	}},
	{"hugepage limits", func(s *specs.Spec) bool { r := s.Linux.Resources; return r != nil && len(r.HugepageLimits) > 0 }},
	{"network cgroup settings", func(s *specs.Spec) bool { r := s.Linux.Resources; return r != nil && r.Network != nil }},
	{"RDMA limits", func(s *specs.Spec) bool { r := s.Linux.Resources; return r != nil && len(r.Rdma) > 0 }},
	{"unified cgroup v2 settings", func(s *specs.Spec) bool { r := s.Linux.Resources; return r != nil && len(r.Unified) > 0 }},
	{"block I/O settings other than the weight (Docker names devices by path)", func(s *specs.Spec) bool {
		r := s.Linux.Resources
		if r == nil || r.BlockIO == nil {
			return false
		}
		b := r.BlockIO
		return b.LeafWeight != nil || len(b.WeightDevice) > 0 || len(b.ThrottleReadBpsDevice) > 0 ||
			len(b.ThrottleWriteBpsDevice) > 0 || len(b.ThrottleReadIOPSDevice) > 0 || len(b.ThrottleWriteIOPSDevice) > 0
	}},
}

func memory(s *specs.Spec) *specs.LinuxMemory {
	if s.Linux.Resources == nil {
		return nil
	}
	return s.Linux.Resources.Memory
}

// translateProcess: the command replaces the image's entrypoint and
// command; environment, working directory, user, OOM score, terminal.
func translateProcess(s *specs.Spec, t *translation) error {
	p := s.Process
	if p.ConsoleSize != nil && !p.Terminal {
		return invalid("spec: a console size without a terminal")
	}
	t.config.Tty = p.Terminal
	if b := p.ConsoleSize; b != nil {
		// Daemons of API 1.42 and later give the terminal this size
		// before the process starts; older ones ignore it, and Start
		// resizes the terminal once the process runs (see doc.go).
		t.host.ConsoleSize = [2]uint{uint(b.Height), uint(b.Width)}
	}
	t.config.Entrypoint = []string{p.Args[0]}
	t.config.Cmd = append([]string{}, p.Args[1:]...)
	t.config.Env = slices.Clone(p.Env)
	t.config.WorkingDir = p.Cwd
	if t.config.WorkingDir == "" {
		t.config.WorkingDir = "/"
	}
	t.config.User = fmt.Sprintf("%d:%d", p.User.UID, p.User.GID)
	for _, g := range p.User.AdditionalGids {
		t.host.GroupAdd = append(t.host.GroupAdd, strconv.FormatUint(uint64(g), 10))
	}
	t.config.Hostname = s.Hostname
	t.config.Domainname = s.Domainname
	if p.OOMScoreAdj != nil {
		t.host.OomScoreAdj = *p.OOMScoreAdj
	}
	// The command is the container's PID 1, whatever the daemon's default.
	noInit := false
	t.host.Init = &noInit
	return nil
}

// translateCapabilities: Docker gives the process one set as bounding,
// effective and permitted; berth drops all and adds that set back.
func translateCapabilities(s *specs.Spec, t *translation) error {
	t.host.CapDrop = []string{"ALL"}
	c := s.Process.Capabilities
	if c == nil {
		return nil
	}
	set := sortedSet(c.Bounding)
	if !slices.Equal(set, sortedSet(c.Effective)) || !slices.Equal(set, sortedSet(c.Permitted)) {
		return notImplemented("spec: Docker gives one capability set as bounding, effective and permitted; these differ")
	}
	for _, name := range set {
		if !strings.HasPrefix(name, "CAP_") {
			return invalid("spec: capability %q", name)
		}
	}
	t.host.CapAdd = set
	return nil
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// ulimitNames maps OCI rlimits to Docker's ulimit names. RLIMIT_AS is
// missing on purpose: Docker refuses it.
var ulimitNames = map[string]string{
	"RLIMIT_CORE": "core", "RLIMIT_CPU": "cpu", "RLIMIT_DATA": "data", "RLIMIT_FSIZE": "fsize",
	"RLIMIT_LOCKS": "locks", "RLIMIT_MEMLOCK": "memlock", "RLIMIT_MSGQUEUE": "msgqueue",
	"RLIMIT_NICE": "nice", "RLIMIT_NOFILE": "nofile", "RLIMIT_NPROC": "nproc", "RLIMIT_RSS": "rss",
	"RLIMIT_RTPRIO": "rtprio", "RLIMIT_RTTIME": "rttime", "RLIMIT_SIGPENDING": "sigpending",
	"RLIMIT_STACK": "stack",
}

func translateRlimits(s *specs.Spec, t *translation) error {
	for _, r := range s.Process.Rlimits {
		name, ok := ulimitNames[r.Type]
		if !ok {
			return notImplemented("spec: Docker has no ulimit for %s", r.Type)
		}
		if r.Soft > 1<<63-1 || r.Hard > 1<<63-1 {
			return notImplemented("spec: %s above Docker's int64 range", r.Type)
		}
		t.host.Ulimits = append(t.host.Ulimits, &container.Ulimit{Name: name, Soft: int64(r.Soft), Hard: int64(r.Hard)})
	}
	return nil
}

// translateSecurity: no-new-privileges, AppArmor, seccomp, masked and
// read-only paths, sysctls. Where the spec is silent (no seccomp profile,
// no AppArmor profile, nil path lists) Docker's defaults stay: berth does
// not relax the daemon's confinement by omission.
func translateSecurity(s *specs.Spec, t *translation) error {
	t.host.SecurityOpt = append(t.host.SecurityOpt, "no-new-privileges:"+strconv.FormatBool(s.Process.NoNewPrivileges))
	if s.Process.ApparmorProfile != "" {
		t.host.SecurityOpt = append(t.host.SecurityOpt, "apparmor="+s.Process.ApparmorProfile)
	}
	if sc := s.Linux.Seccomp; driver.UnfilteredSeccomp(sc) {
		// No filter: given the profile, Docker would install one that
		// allows everything.
		t.host.SecurityOpt = append(t.host.SecurityOpt, "seccomp=unconfined")
	} else if sc != nil {
		// Docker's profile format is a superset of the OCI one: the JSON
		// goes inline, as the docker CLI sends a profile file's content.
		b, err := json.Marshal(sc)
		if err != nil {
			return invalid("spec: seccomp: %v", err)
		}
		t.host.SecurityOpt = append(t.host.SecurityOpt, "seccomp="+string(b))
	}
	if s.Linux.MaskedPaths != nil {
		t.host.MaskedPaths = append([]string{}, s.Linux.MaskedPaths...)
	}
	if s.Linux.ReadonlyPaths != nil {
		t.host.ReadonlyPaths = append([]string{}, s.Linux.ReadonlyPaths...)
	}
	if len(s.Linux.Sysctl) > 0 {
		t.host.Sysctls = s.Linux.Sysctl
	}
	return nil
}

// translateRoot: the root filesystem comes from the image; a directory is
// not something Docker can run yet (it will be imported as an image).
func translateRoot(s *specs.Spec, t *translation) error {
	if s.Root != nil {
		if s.Root.Path != "" {
			return notImplemented("root filesystem directory %q: the Docker backend runs images only", s.Root.Path)
		}
		t.host.ReadonlyRootfs = s.Root.Readonly
	}
	return nil
}

// translateNamespaces: each namespace is the container's own (Docker's
// default) or, absent from the spec, the host's. Joining a namespace by
// path is not something Docker does.
func translateNamespaces(s *specs.Spec, t *translation) error {
	has := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			return notImplemented("spec: Docker cannot join the %s namespace at %s", ns.Type, ns.Path)
		}
		has[ns.Type] = true
	}
	if !has[specs.MountNamespace] {
		return notImplemented("spec: Docker always gives a container its own mount namespace")
	}
	if has[specs.TimeNamespace] {
		return notImplemented("spec: Docker has no time namespace")
	}
	if !has[specs.NetworkNamespace] {
		t.host.NetworkMode = "host"
	} else {
		// A new network namespace has only a loopback interface: Docker's
		// "none" network. With networking disabled Docker leaves the new
		// namespace to runc (which brings lo up) instead of making it
		// through libnetwork and a prestart hook: the same namespace,
		// hundreds of milliseconds sooner.
		t.host.NetworkMode = "none"
		t.config.NetworkDisabled = true
	}
	if !has[specs.PIDNamespace] {
		t.host.PidMode = "host"
	}
	if has[specs.IPCNamespace] {
		t.host.IpcMode = container.IPCModePrivate
	} else {
		t.host.IpcMode = container.IPCModeHost
	}
	if !has[specs.UTSNamespace] {
		if s.Hostname != "" {
			return invalid("spec: a hostname without a UTS namespace")
		}
		t.host.UTSMode = "host"
	}
	if err := translateCgroupNamespace(has[specs.CgroupNamespace], t); err != nil {
		return err
	}
	return translateUserNamespace(s, has[specs.UserNamespace], t)
}

// translateCgroupNamespace: a cgroup namespace of its own, or the host's
// where the API has the choice.
func translateCgroupNamespace(has bool, t *translation) error {
	switch {
	case has && !t.cgroupns:
		return notImplemented("spec: cgroup namespaces need Engine API 1.41")
	case has:
		t.host.CgroupnsMode = container.CgroupnsModePrivate
	case t.cgroupns:
		t.host.CgroupnsMode = container.CgroupnsModeHost
	}
	return nil
}

// translateUserNamespace: a user namespace is the userns-remap daemon's,
// whose mapping goes in the spec; without one, the host's.
func translateUserNamespace(s *specs.Spec, has bool, t *translation) error {
	switch {
	case has && t.remap == nil:
		return notImplemented("user namespaces: this Docker daemon runs without userns-remap")
	case has:
		// The daemon's one mapping, not the pool's block: see doc.go.
		s.Linux.UIDMappings = slices.Clone(t.remap.UID)
		s.Linux.GIDMappings = slices.Clone(t.remap.GID)
	case t.remap != nil:
		// No user namespace asked for: the host's, as the spec says,
		// not the one the daemon gives by default.
		t.host.UsernsMode = "host"
	}
	return nil
}
