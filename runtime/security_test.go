package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
)

// The allowed blocks and the denied ones partition the 32-bit request
// space: every request is in exactly one of them.
func TestIoctlBlocksPartition(t *testing.T) {
	in := func(blocks []ioctlBlock, req uint32) int {
		n := 0
		for _, b := range blocks {
			if b.contains(req) {
				n++
			}
		}
		return n
	}
	reqs := []uint32{0, ^uint32(0), 0x4C00, 0x4C01, 0x4CFF, 0x4BFF, 0x4D00, 0x125F, 0x1269, 0x5401 /* TCGETS */, 0x80081272 /* BLKGETSIZE64 */}
	for range 100000 {
		reqs = append(reqs, rand.Uint32())
	}
	for _, r := range reqs {
		_, denied := deniedIoctl(r)
		require.Equal(t, 1, in(allowedIoctls(), r)+in(deniedIoctls, r), "request %#x", r)
		require.Equal(t, denied, in(allowedIoctls(), r) == 0, "request %#x", r)
	}
	require.LessOrEqual(t, len(allowedIoctls()), 24, "the filter stays small")
}

// seccompAllows evaluates a profile for ioctl(fd, req) the way the kernel
// sees the compiled filter: a rule matches when all its conditions on
// distinct arguments hold (repeated ones on one argument are alternatives,
// as runc compiles them); a conditional rule never applies next to an
// unconditional one for the same call (libseccomp drops it).
func seccompAllows(sc *specs.LinuxSeccomp, req uint64) bool {
	var actions []specs.LinuxSeccompAction
	unconditional := false
	for _, r := range sc.Syscalls {
		if slices.Contains(r.Names, "ioctl") && len(r.Args) == 0 && r.Action != sc.DefaultAction {
			unconditional = true
			actions = append(actions, r.Action)
		}
	}
	if !unconditional {
		for _, r := range sc.Syscalls {
			if !slices.Contains(r.Names, "ioctl") {
				continue
			}
			match := true
			for _, a := range r.Args {
				v := req
				if a.Index != 1 {
					v = 0
				}
				switch a.Op {
				case specs.OpMaskedEqual:
					match = match && v&a.Value == a.ValueTwo
				case specs.OpEqualTo:
					match = match && v == a.Value
				}
			}
			if match {
				actions = append(actions, r.Action)
			}
		}
	}
	if len(actions) == 0 {
		actions = []specs.LinuxSeccompAction{sc.DefaultAction}
	}
	for _, a := range actions {
		if !slices.Contains(permissiveActions, a) {
			return false
		}
	}
	return true
}

func TestConfineDeviceIoctls(t *testing.T) {
	profiles := map[string]*specs.LinuxSeccomp{
		"default errno, ioctl allowed": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read", "ioctl", "write"}, Action: specs.ActAllow}}},
		"default allow":                {DefaultAction: specs.ActAllow},
		"default allow, ioctl logged":  {DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActLog}}},
		"ioctl on fd 0 only": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0, Op: specs.OpEqualTo}}}}},
	}
	for name, sc := range profiles {
		require.NoError(t, confineDeviceIoctls(sc), name)
		for _, req := range []uint64{0x4C01, 0x4C04, 0x4C06, 0x4C80, 1<<32 | 0x4C01, 0xFFFFFFFF00004C00} {
			require.Falsef(t, seccompAllows(sc, req), "%s lets %#x through", name, req)
		}
		if name != "ioctl on fd 0 only" {
			for _, req := range []uint64{0x5401, 0x80081272, 0x4BFF, 0x4D00} {
				require.Truef(t, seccompAllows(sc, req), "%s denies %#x", name, req)
			}
		}
		require.True(t, slices.ContainsFunc(sc.Syscalls, func(r specs.LinuxSyscall) bool { return slices.Contains(r.Names, "read") }) || name != "default errno, ioctl allowed", "other calls keep their rule")
	}
	for _, req := range []uint64{0x4C01, 1<<32 | 0x4C0A} {
		sc := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 1, Value: req, Op: specs.OpEqualTo}}}}}
		require.Truef(t, errdefs.IsPermissionDenied(confineDeviceIoctls(sc)), "a rule naming %#x", req)
	}
	sc := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 1, Value: 0x4000, Op: specs.OpGreaterThan}}}}}
	require.True(t, errdefs.IsInvalidArgument(confineDeviceIoctls(sc)), "a range over the request")
	sc = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 1, Value: 0xFF00, ValueTwo: 0x4C00, Op: specs.OpMaskedEqual}}}}}
	require.True(t, errdefs.IsPermissionDenied(confineDeviceIoctls(sc)), "a masked rule admitting loop ioctls")
}

// A profile berth confined already (a container's spec read back, moved,
// created again) is confined again to the same effect.
func TestConfineDeviceIoctlsIsIdempotent(t *testing.T) {
	s := DefaultSpec("/rootfs", "/bin/true")
	require.NoError(t, applySeccomp("x", s, SecurityPolicy{}))
	once := len(s.Linux.Seccomp.Syscalls)
	require.NoError(t, applySeccomp("x", s, SecurityPolicy{}))
	require.Equal(t, once, len(s.Linux.Seccomp.Syscalls))
	require.False(t, seccompAllows(s.Linux.Seccomp, 0x4C01))
	require.True(t, seccompAllows(s.Linux.Seccomp, 0x5401))
	u := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	require.NoError(t, confineDeviceIoctls(u))
	once = len(u.Syscalls)
	require.NoError(t, confineDeviceIoctls(u))
	require.Equal(t, once, len(u.Syscalls))
	require.False(t, seccompAllows(u, 0x4C01))
}

func TestDefaultSeccompBlocksUserNamespaces(t *testing.T) {
	s := DefaultSpec("/rootfs", "/bin/true")
	require.NoError(t, applySeccomp("x", s, SecurityPolicy{}))
	sc := s.Linux.Seccomp
	require.Equal(t, specs.ActErrno, sc.DefaultAction)
	require.False(t, slices.ContainsFunc(sc.Syscalls, func(r specs.LinuxSyscall) bool {
		return slices.Contains(r.Names, "unshare") && r.Action == specs.ActAllow
	}), "unshare is allowed only with CAP_SYS_ADMIN")
	require.False(t, seccompAllows(sc, 0x4C01))
	require.True(t, seccompAllows(sc, 0x5401))
}

func TestCheckSecurity(t *testing.T) {
	require.NoError(t, checkSecurity("x", DefaultSpec("/r", "/bin/true"), SecurityPolicy{}))
	s := DefaultSpec("/r", "/bin/true")
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
	err := checkSecurity("x", s, SecurityPolicy{})
	require.True(t, errdefs.IsPermissionDenied(err), "%v", err)
	require.Contains(t, err.Error(), "CAP_SYS_ADMIN")
	require.NoError(t, checkSecurity("x", s, SecurityPolicy{AllowPrivileged: true}))
	// Fewer capabilities than the default are always fine.
	s = DefaultSpec("/r", "/bin/true")
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}}
	require.NoError(t, checkSecurity("x", s, SecurityPolicy{}))
}

func TestCallerSeccompMayOnlyNarrow(t *testing.T) {
	s := DefaultSpec("/r", "/bin/true")
	def, err := defaultSeccomp(s)
	require.NoError(t, err)
	s.Linux.Seccomp = def
	require.NoError(t, checkSecurity("x", s, SecurityPolicy{}), "the default profile itself")
	narrow := *def
	narrow.Syscalls = narrow.Syscalls[:len(narrow.Syscalls)/2]
	s.Linux.Seccomp = &narrow
	require.NoError(t, checkSecurity("x", s, SecurityPolicy{}), "a part of it")
	for name, sc := range map[string]*specs.LinuxSeccomp{
		"unshare":                     {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read", "unshare"}, Action: specs.ActAllow}}},
		"clone without the flag mask": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"clone"}, Action: specs.ActAllow}}},
		"keyctl logged":               {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"keyctl"}, Action: specs.ActLog}}},
		"an agent":                    {DefaultAction: specs.ActErrno, ListenerPath: "/run/agent.sock"},
		"spec_allow flag":             {DefaultAction: specs.ActErrno, Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagSpecAllow}},
	} {
		s.Linux.Seccomp = sc
		err := checkSecurity("x", s, SecurityPolicy{})
		require.Truef(t, errdefs.IsPermissionDenied(err), "%s: %v", name, err)
		require.NoError(t, checkSecurity("x", s, SecurityPolicy{AllowPrivileged: true}), name)
	}
}

func TestReadOnlyOptions(t *testing.T) {
	require.True(t, readOnly([]string{"ro"}))
	require.False(t, readOnly([]string{"ro", "rw"}))
	require.True(t, readOnly([]string{"rw", "nosuid", "ro"}))
	require.False(t, readOnly(nil))
}

// A privileged spec without capability sets still gets a profile: the one
// for every capability.
func TestSeccompForAllCapabilities(t *testing.T) {
	s := DefaultSpec("/r", "/bin/true")
	s.Process.Capabilities = nil
	require.True(t, errdefs.IsPermissionDenied(checkSecurity("x", s, SecurityPolicy{})))
	require.NoError(t, applySeccomp("x", s, SecurityPolicy{}))
	require.True(t, slices.ContainsFunc(s.Linux.Seccomp.Syscalls, func(r specs.LinuxSyscall) bool {
		return slices.Contains(r.Names, "mount") && r.Action == specs.ActAllow
	}), "CAP_SYS_ADMIN's calls are in the profile for every capability")
}

// Every container gets the device ioctl rules: one without a block device
// of its own may be handed a loop device's descriptor by another.
func TestDeviceIoctlRulesEverywhere(t *testing.T) {
	rt, f, _ := newFakeRuntime(t)
	ctx := context.Background()
	_, err := rt.Create(ctx, "plain", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true")})
	require.NoError(t, err)
	sc := f.created["plain"].Spec.Linux.Seccomp
	require.False(t, seccompAllows(sc, 0x4C01), "LOOP_CLR_FD")
	require.True(t, seccompAllows(sc, 0x5401), "TCGETS")
}

// AllowHostNamespaces admits sharing the host's network, PID, IPC and
// UTS namespaces, and nothing else AllowPrivileged would: not the mount
// namespace, not a namespace joined by path, not a capability.
func TestAllowHostNamespaces(t *testing.T) {
	hostOnly := SecurityPolicy{AllowHostNamespaces: true}
	without := func(types ...specs.LinuxNamespaceType) *specs.Spec {
		s := DefaultSpec("/r", "/bin/true")
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return slices.Contains(types, n.Type) })
		return s
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace} {
		err := checkSecurity("x", without(typ), SecurityPolicy{})
		require.Truef(t, errdefs.IsPermissionDenied(err), "the host's %s without the switch: %v", typ, err)
		require.NoError(t, checkSecurity("x", without(typ), hostOnly), typ)
	}
	require.NoError(t, checkSecurity("x", without(specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace), hostOnly))

	err := checkSecurity("x", without(specs.MountNamespace), hostOnly)
	require.Truef(t, errdefs.IsPermissionDenied(err), "the host's mount namespace: %v", err)
	s := DefaultSpec("/r", "/bin/true")
	s.Linux.Namespaces[0].Path = "/proc/1/ns/pid"
	err = checkSecurity("x", s, hostOnly)
	require.Truef(t, errdefs.IsPermissionDenied(err), "a namespace joined by path: %v", err)
	s = without(specs.NetworkNamespace)
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_NET_ADMIN")
	err = checkSecurity("x", s, hostOnly)
	require.Truef(t, errdefs.IsPermissionDenied(err), "a capability beyond the default: %v", err)
	require.Contains(t, err.Error(), "CAP_NET_ADMIN")
}

// unfilteredPolicy is the policy that admits containers without a seccomp
// filter: AllowUnfilteredSeccomp on top of AllowPrivileged.
var unfilteredPolicy = SecurityPolicy{AllowPrivileged: true, AllowUnfilteredSeccomp: true}

// AllowUnfilteredSeccomp drops the filter of a spec whose profile allows
// everything and says nothing else, and of no other: every other profile
// keeps the loop device rules, and so does the allow-all one without the
// switch.
func TestUnfilteredSeccomp(t *testing.T) {
	allowAll := func() *specs.LinuxSeccomp { return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow} }
	eperm := uint(1)
	confined := func(p SecurityPolicy, sc *specs.LinuxSeccomp) *specs.LinuxSeccomp {
		t.Helper()
		s := DefaultSpec("/r", "/bin/true")
		s.Linux.Seccomp = sc
		require.NoError(t, applySeccomp("x", s, p))
		return s.Linux.Seccomp
	}
	requireLoopRules := func(sc *specs.LinuxSeccomp, what string) {
		t.Helper()
		require.NotNil(t, sc, what)
		require.Falsef(t, seccompAllows(sc, 0x4C01), "%s lets LOOP_CLR_FD through", what)
		require.Falsef(t, seccompAllows(sc, 0x4C08), "%s lets LOOP_CHANGE_FD... through", what)
	}

	sc := confined(unfilteredPolicy, allowAll())
	require.Equal(t, &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}, sc, "the allow-all profile goes to the engine as it is: no filter")
	require.True(t, driver.UnfilteredSeccomp(sc))
	sc = confined(unfilteredPolicy, &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{}, Flags: []specs.LinuxSeccompFlag{}})
	require.True(t, driver.UnfilteredSeccomp(sc), "empty lists say nothing either")

	for _, p := range []SecurityPolicy{{}, {AllowPrivileged: true}, {AllowUnfilteredSeccomp: true}, {AllowPrivileged: true, AllowHostNamespaces: true}} {
		requireLoopRules(confined(p, allowAll()), fmt.Sprintf("an allow-all profile under %+v", p))
	}
	for name, prof := range map[string]*specs.LinuxSeccomp{
		"none (the default)":      nil,
		"default errno":           {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read", "ioctl"}, Action: specs.ActAllow}}},
		"default log":             {DefaultAction: specs.ActLog},
		"default kill":            {DefaultAction: specs.ActKill},
		"default trace":           {DefaultAction: specs.ActTrace},
		"allow, one rule":         {DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"keyctl"}, Action: specs.ActErrno}}},
		"allow, ioctl allowed":    {DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActAllow}}},
		"allow, an architecture":  {DefaultAction: specs.ActAllow, Architectures: []specs.Arch{specs.ArchX86_64}},
		"allow, a flag":           {DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}},
		"allow, an errno":         {DefaultAction: specs.ActAllow, DefaultErrnoRet: &eperm},
		"allow, an agent":         {DefaultAction: specs.ActAllow, ListenerPath: "/run/agent.sock"},
		"allow, agent metadata":   {DefaultAction: specs.ActAllow, ListenerMetadata: "x"},
		"allow-all confined once": confined(SecurityPolicy{AllowPrivileged: true}, allowAll()),
	} {
		got := confined(unfilteredPolicy, prof)
		require.Falsef(t, driver.UnfilteredSeccomp(got), "%s", name)
		requireLoopRules(got, name)
	}
}

// The switch admits nothing by itself: an allow-all profile is refused
// without AllowPrivileged, switch or not, and the switch changes no other
// check.
func TestUnfilteredSeccompNeedsPrivileged(t *testing.T) {
	rt, f, _ := newFakeRuntime(t)
	rt.security = SecurityPolicy{AllowUnfilteredSeccomp: true}
	s := DefaultSpec(t.TempDir(), "/bin/true")
	s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	_, err := rt.Create(context.Background(), "unconfined", &Config{Spec: s})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	require.Contains(t, err.Error(), "AllowPrivileged")
	require.NotContains(t, f.created, "unconfined")
	s = DefaultSpec(t.TempDir(), "/bin/true")
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
	_, err = rt.Create(context.Background(), "admin", &Config{Spec: s})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
}

// Through Create: the engine gets the allow-all profile untouched (no
// filter) only under both switches; a runtime without
// AllowUnfilteredSeccomp hands it the loop device rules, as before.
func TestCreateUnfilteredSeccomp(t *testing.T) {
	for _, p := range []SecurityPolicy{{AllowPrivileged: true}, unfilteredPolicy} {
		rt, f, _ := newFakeRuntime(t)
		rt.security = p
		s := DefaultSpec(t.TempDir(), "/bin/true")
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
		_, err := rt.Create(context.Background(), "c", &Config{Spec: s})
		require.NoError(t, err)
		sc := f.created["c"].Spec.Linux.Seccomp
		require.Equal(t, p.AllowUnfilteredSeccomp, driver.UnfilteredSeccomp(sc), "%+v", p)
		require.Equal(t, p.AllowUnfilteredSeccomp, seccompAllows(sc, 0x4C01), "%+v: LOOP_CLR_FD", p)
		require.Equal(t, specs.ActAllow, s.Linux.Seccomp.DefaultAction, "the caller's spec is its own")
		require.Empty(t, s.Linux.Seccomp.Syscalls, "the caller's spec is its own")
		// A container without a profile of its own gets the default
		// one, loop rules included, under any policy.
		_, err = rt.Create(context.Background(), "d", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true")})
		require.NoError(t, err)
		require.False(t, seccompAllows(f.created["d"].Spec.Linux.Seccomp, 0x4C01))
	}
}
