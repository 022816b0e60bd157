package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
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
	{"a terminal", func(s *specs.Spec) bool { return s.Process.Terminal || s.Process.ConsoleSize != nil }},
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
// command; environment, working directory, user, OOM score.
func translateProcess(s *specs.Spec, t *translation) error {
	p := s.Process
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
	if sc := s.Linux.Seccomp; sc != nil {
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
	switch {
	case has[specs.CgroupNamespace] && !t.cgroupns:
		return notImplemented("spec: cgroup namespaces need Engine API 1.41")
	case has[specs.CgroupNamespace]:
		t.host.CgroupnsMode = container.CgroupnsModePrivate
	case t.cgroupns:
		t.host.CgroupnsMode = container.CgroupnsModeHost
	}
	switch {
	case has[specs.UserNamespace] && t.remap == nil:
		return notImplemented("user namespaces: this Docker daemon runs without userns-remap")
	case has[specs.UserNamespace]:
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

// standardMount is one of the file systems Docker mounts in every
// container, with the options it uses.
type standardMount struct {
	typ     string
	options []string
}

var standardMounts = map[string]standardMount{
	"/proc":          {"proc", []string{"nodev", "noexec", "nosuid"}},
	"/dev":           {"tmpfs", []string{"mode=755", "nosuid", "size=65536k", "strictatime"}},
	"/dev/pts":       {"devpts", []string{"mode=0620", "newinstance", "noexec", "nosuid", "ptmxmode=0666"}},
	"/dev/shm":       {"tmpfs", []string{"mode=1777", "nodev", "noexec", "nosuid"}}, // plus size=ShmSize
	"/dev/mqueue":    {"mqueue", []string{"nodev", "noexec", "nosuid"}},
	"/sys":           {"sysfs", []string{"nodev", "noexec", "nosuid", "ro"}},
	"/sys/fs/cgroup": {"cgroup", []string{"nodev", "noexec", "nosuid", "ro"}},
}

// translateMounts: the standard file systems must be Docker's own (it
// mounts them whatever the spec says); binds and tmpfs mounts are
// translated; any other file system is refused.
func translateMounts(s *specs.Spec, t *translation) error {
	seen := map[string]bool{}
	for i, m := range s.Mounts {
		dest := filepath.Clean(m.Destination)
		if std, ok := standardMounts[dest]; ok && m.Type == std.typ {
			if err := standardMountOptions(dest, std, m.Options, t); err != nil {
				return err
			}
			seen[dest] = true
			continue
		}
		switch {
		case m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind"):
			bm, idmapped, err := bindMount(m)
			if err != nil {
				return err
			}
			if idmapped {
				if t.remap == nil || t.mapBind == nil || !driver.HasUserNamespace(s) {
					return notImplemented("spec: ID-mapped bind of %s outside a user namespace of a userns-remap daemon", m.Source)
				}
				if bm.Source, err = t.mapBind(m.Source); err != nil {
					return err
				}
				// The mapping in force is the daemon's.
				s.Mounts[i].UIDMappings = slices.Clone(t.remap.UID)
				s.Mounts[i].GIDMappings = slices.Clone(t.remap.GID)
			}
			t.host.Mounts = append(t.host.Mounts, bm)
		case m.Type == "tmpfs":
			if t.host.Tmpfs == nil {
				t.host.Tmpfs = map[string]string{}
			}
			t.host.Tmpfs[dest] = strings.Join(m.Options, ",")
		default:
			return notImplemented("spec: mount of %s (%s) at %s: Docker mounts only binds and tmpfs", m.Source, m.Type, m.Destination)
		}
	}
	var missing []string
	for dest := range standardMounts {
		if !seen[dest] {
			missing = append(missing, dest)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return notImplemented("spec: Docker always mounts %s", strings.Join(missing, ", "))
	}
	return nil
}

func standardMountOptions(dest string, std standardMount, options []string, t *translation) error {
	var got []string
	for _, o := range options {
		switch {
		case o == "relatime" || o == "rw" && !slices.Contains(std.options, "ro"):
			// the kernel's default
		case dest == "/dev/shm" && strings.HasPrefix(o, "size="):
			n, err := volume.ParseBytes(strings.TrimPrefix(o, "size="))
			if err == nil && n == 0 {
				err = errors.New("a size of 0")
			}
			if err != nil {
				return invalid("spec: /dev/shm %s: %v", o, err)
			}
			t.host.ShmSize = n
		default:
			got = append(got, o)
		}
	}
	if !slices.Equal(sortedSet(got), std.options) {
		return notImplemented("spec: Docker mounts %s (%s) with options %s, not %s",
			dest, std.typ, strings.Join(std.options, ","), strings.Join(options, ","))
	}
	return nil
}

// bindPropagations are the propagation options a bind mount may carry.
var bindPropagations = map[string]mount.Propagation{
	"private": mount.PropagationPrivate, "rprivate": mount.PropagationRPrivate,
	"shared": mount.PropagationShared, "rshared": mount.PropagationRShared,
	"slave": mount.PropagationSlave, "rslave": mount.PropagationRSlave,
}

// inheritedFlags are bind options Docker cannot set, but that a bind mount
// inherits from its source's mount: accepted when the source has them.
var inheritedFlags = map[string]uint64{"nosuid": unix.ST_NOSUID, "nodev": unix.ST_NODEV, "noexec": unix.ST_NOEXEC}

// bindMount translates a bind mount of a host path (berth's volumes reach
// the container this way), and tells whether it asks to be ID-mapped.
func bindMount(m specs.Mount) (_ mount.Mount, idmapped bool, _ error) {
	if !filepath.IsAbs(m.Source) {
		return mount.Mount{}, false, invalid("spec: bind source %q is not absolute", m.Source)
	}
	out := mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Destination, BindOptions: &mount.BindOptions{NonRecursive: true}}
	var fs unix.Statfs_t
	statted := false
	for _, o := range m.Options {
		switch {
		case o == "bind":
		case o == "rbind":
			out.BindOptions.NonRecursive = false
		case o == "ro":
			out.ReadOnly = true
		case o == "rw":
		case o == "idmap" || o == "ridmap":
			idmapped = true
		case bindPropagations[o] != "":
			out.BindOptions.Propagation = bindPropagations[o]
		case inheritedFlags[o] != 0:
			if !statted {
				if err := unix.Statfs(m.Source, &fs); err != nil {
					return mount.Mount{}, false, invalid("spec: bind source %s: %v", m.Source, err)
				}
				statted = true
			}
			if uint64(fs.Flags)&inheritedFlags[o] == 0 {
				return mount.Mount{}, false, notImplemented("spec: bind of %s with %s: Docker cannot set it, and the source is not mounted %s", m.Source, o, o)
			}
		default:
			return mount.Mount{}, false, notImplemented("spec: bind of %s: Docker cannot set option %q", m.Source, o)
		}
	}
	if _, err := os.Stat(m.Source); err != nil {
		return mount.Mount{}, false, invalid("spec: bind source: %v", err)
	}
	return out, idmapped, nil
}

// translateResources: memory, CPU, pids, block I/O weight and device
// access rules.
func translateResources(s *specs.Spec, t *translation) error {
	r := s.Linux.Resources
	if r == nil {
		return nil
	}
	res := &t.host.Resources
	if m := r.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			res.Memory = *m.Limit
			// OCI: no swap limit given means none set (runc leaves it
			// unlimited); Docker would make it twice the memory.
			res.MemorySwap = -1
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
		if m.Reservation != nil {
			res.MemoryReservation = *m.Reservation
		}
		if m.Swappiness != nil {
			v := int64(*m.Swappiness)
			res.MemorySwappiness = &v
		}
		res.OomKillDisable = m.DisableOOMKiller
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			res.CPUShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			res.CPUQuota = *c.Quota
		}
		if c.Period != nil {
			res.CPUPeriod = int64(*c.Period)
		}
		if c.RealtimeRuntime != nil {
			res.CPURealtimeRuntime = *c.RealtimeRuntime
		}
		if c.RealtimePeriod != nil {
			res.CPURealtimePeriod = int64(*c.RealtimePeriod)
		}
		res.CpusetCpus, res.CpusetMems = c.Cpus, c.Mems
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		v := *r.Pids.Limit
		res.PidsLimit = &v
	}
	if r.BlockIO != nil && r.BlockIO.Weight != nil {
		res.BlkioWeight = *r.BlockIO.Weight
	}
	return deviceRules(r.Devices, t)
}

// deviceRules: Docker denies every device but its standard ones, then
// applies allow rules. The spec's list must start the same way (a deny-all
// rule, as in runtime.DefaultSpec) and add only allow rules; no list at all
// leaves Docker's default.
func deviceRules(rules []specs.LinuxDeviceCgroup, t *translation) error {
	if len(rules) == 0 {
		return nil
	}
	first := rules[0]
	if first.Allow || (first.Type != "" && first.Type != "a") || first.Major != nil || first.Minor != nil || !sameAccess(first.Access, "rwm") {
		return notImplemented("spec: Docker's device rules start with deny-all; this list starts with %+v", first)
	}
	for _, d := range rules[1:] {
		if !d.Allow {
			return notImplemented("spec: Docker has only allow rules after its deny-all")
		}
		typ := d.Type
		if typ == "" {
			typ = "a"
		}
		num := func(p *int64) string {
			if p == nil {
				return "*"
			}
			return strconv.FormatInt(*p, 10)
		}
		t.host.DeviceCgroupRules = append(t.host.DeviceCgroupRules, fmt.Sprintf("%s %s:%s %s", typ, num(d.Major), num(d.Minor), d.Access))
	}
	return nil
}

func sameAccess(a, b string) bool {
	as, bs := strings.Split(a, ""), strings.Split(b, "")
	return slices.Equal(sortedSet(as), sortedSet(bs))
}

// translateDevices: Docker creates a device node only from a host node,
// which it copies with its owner and mode. Each node of the spec must
// exist on the host with the same type and numbers (found through
// /sys/dev), and a rule of the spec must allow it.
func translateDevices(s *specs.Spec, t *translation) error {
	for _, d := range s.Linux.Devices {
		if d.Type != "b" && d.Type != "c" && d.Type != "u" {
			return notImplemented("spec: device %s of type %q: Docker maps block and character devices", d.Path, d.Type)
		}
		host, st, err := hostDevice(d)
		if err != nil {
			return err
		}
		if d.FileMode != nil && d.FileMode.Perm() != os.FileMode(st.Mode).Perm() ||
			d.UID != nil && *d.UID != st.Uid || d.GID != nil && *d.GID != st.Gid {
			return notImplemented("spec: device %s: Docker copies the owner and mode of the host's %s", d.Path, host)
		}
		access := allowedAccess(s.Linux.Resources, d)
		if access == "" {
			return notImplemented("spec: device %s: Docker allows access to every node it creates; the spec allows none", d.Path)
		}
		t.host.Devices = append(t.host.Devices, container.DeviceMapping{PathOnHost: host, PathInContainer: d.Path, CgroupPermissions: access})
	}
	return nil
}

// hostDevice finds the host's node for d: the kernel names every device
// under /sys/dev/{block,char}/MAJOR:MINOR.
func hostDevice(d specs.LinuxDevice) (string, *unix.Stat_t, error) {
	kind := "char"
	if d.Type == "b" {
		kind = "block"
	}
	uevent, err := os.ReadFile(fmt.Sprintf("/sys/dev/%s/%d:%d/uevent", kind, d.Major, d.Minor))
	if err != nil {
		return "", nil, invalid("spec: device %s (%s %d:%d) does not exist on the host", d.Path, d.Type, d.Major, d.Minor)
	}
	for _, line := range strings.Split(string(uevent), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			host := filepath.Join("/dev", name)
			var st unix.Stat_t
			if err := unix.Stat(host, &st); err != nil || unix.Major(st.Rdev) != uint32(d.Major) || unix.Minor(st.Rdev) != uint32(d.Minor) {
				break
			}
			return host, &st, nil
		}
	}
	return "", nil, invalid("spec: device %s (%s %d:%d) has no node under /dev on the host", d.Path, d.Type, d.Major, d.Minor)
}

// allowedAccess returns the access the spec's rules grant to device d.
func allowedAccess(r *specs.LinuxResources, d specs.LinuxDevice) string {
	if r == nil {
		return ""
	}
	access := ""
	for _, rule := range r.Devices {
		typ := rule.Type
		if typ != "" && typ != "a" && typ != d.Type {
			continue
		}
		if rule.Major != nil && *rule.Major != d.Major || rule.Minor != nil && *rule.Minor != d.Minor {
			continue
		}
		if rule.Allow {
			access = rule.Access
		} else {
			access = ""
		}
	}
	return access
}
