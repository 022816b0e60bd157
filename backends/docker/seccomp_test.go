package docker

import (
	"context"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// Under AllowUnfilteredSeccomp an allow-all profile runs without any
// filter on Docker too (seccomp=unconfined: Seccomp 0); without the switch
// it runs under one (Seccomp 2), and so does the default profile with it.
func TestUnfilteredSeccompSwitch(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(p runtime.SecurityPolicy, sc *specs.LinuxSeccomp) string {
		h := &harness{host: plainHost, policy: p}
		rt := h.Open(t)
		cfg := h.Config(t, "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status")
		cfg.Spec.Linux.Seccomp = sc
		var out fixture.SyncBuffer
		cfg.IO = runtime.IO{Stdout: &out, Stderr: &out}
		c, err := rt.Create(ctx, runtimetest.NewID("seccomp"), cfg)
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx))
		_, err = c.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
		return out.String()
	}
	allowAll := func() *specs.LinuxSeccomp { return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow} }
	unfiltered := runtime.SecurityPolicy{AllowPrivileged: true, AllowUnfilteredSeccomp: true}
	require.Equal(t, "Seccomp:\t0\n", run(unfiltered, allowAll()))
	require.Equal(t, "Seccomp:\t2\n", run(runtime.SecurityPolicy{AllowPrivileged: true}, allowAll()))
	require.Equal(t, "Seccomp:\t2\n", run(unfiltered, nil))
}
