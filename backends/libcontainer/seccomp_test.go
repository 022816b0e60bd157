package libcontainer_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// AllowUnfilteredSeccomp runs a container whose profile allows everything
// and says nothing else without any seccomp filter (Seccomp: 0, what
// Kubernetes' Unconfined expects), its exec'd processes too. Without the
// switch the same spec runs under a filter (Seccomp: 2, the loop device
// rules), and with it every other profile, the default one included, still
// does.
func TestUnfilteredSeccompSwitch(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	privileged := openOn(t, root, runtime.SecurityPolicy{AllowPrivileged: true})
	unfiltered := openOn(t, root, runtime.SecurityPolicy{AllowPrivileged: true, AllowUnfilteredSeccomp: true})
	status := "grep '^Seccomp:' /proc/self/status"
	spec := func(sc *specs.LinuxSeccomp) *runtime.Config {
		s := runtime.DefaultSpec(rootfs, "/bin/sh", "-c", status)
		s.Linux.Seccomp = sc
		return &runtime.Config{Spec: s}
	}
	allowAll := func() *specs.LinuxSeccomp { return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow} }

	require.Equal(t, "Seccomp:\t0\n", runOut(ctx, t, unfiltered, spec(allowAll())), "an allow-all profile under the switch")
	require.Equal(t, "Seccomp:\t2\n", runOut(ctx, t, privileged, spec(allowAll())), "an allow-all profile without the switch")
	require.Equal(t, "Seccomp:\t2\n", runOut(ctx, t, unfiltered, spec(nil)), "the default profile under the switch")
	require.Equal(t, "Seccomp:\t2\n", runOut(ctx, t, unfiltered, spec(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{{Names: []string{"keyctl"}, Action: specs.ActErrno}}})), "an allow-all profile with a rule under the switch")

	// An exec'd process of an unfiltered container has no filter either;
	// one of a filtered container has one.
	for _, tc := range []struct {
		rt   *runtime.Runtime
		want string
	}{{unfiltered, "Seccomp:\t0\n"}, {privileged, "Seccomp:\t2\n"}} {
		cfg := spec(allowAll())
		cfg.Spec.Process.Args = []string{"/bin/sleep", "60"}
		c, err := tc.rt.Create(ctx, runtimetest.NewID("unfiltered"), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
		require.NoError(t, c.Start(ctx))
		var out fixture.SyncBuffer
		p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", status}, Cwd: "/", Env: cfg.Spec.Process.Env}, runtime.IO{Stdout: &out, Stderr: &out})
		require.NoError(t, err)
		st, err := p.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, 0, st.Code, "%s", out.String())
		require.Equal(t, tc.want, out.String())
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	}
}
