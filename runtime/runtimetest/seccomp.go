package runtimetest

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// tenantDir is where the hostile-tenant tool appears in containers.
const tenantDir = "/berth-tenant"

// withTenant binds the tenant tool (internal/fixture/tenant) into cfg's
// container at /berth-tenant/tenant.
func withTenant(t *testing.T, cfg *runtime.Config) {
	cfg.Spec.Mounts = append(cfg.Spec.Mounts, specs.Mount{Destination: tenantDir, Type: "bind", Source: fixture.TenantTool(t), Options: []string{"rbind", "ro"}})
}

// Every container runs under a seccomp profile (Docker's default where
// the caller gives none): a process without CAP_SYS_ADMIN cannot make a
// user namespace, where it would gain the capabilities to mount and to
// reach kernel code no container should; nor can it reach the kernel's
// 32-bit system call entry.
func testSeccomp(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	for _, userns := range []bool{false, true} {
		if userns && !rt.Capabilities().UserNamespace {
			continue
		}
		out := newBuffer()
		cfg := h.Config(t, "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true && echo unshare-allowed; "+tenantDir+"/tenant unshare-user; "+tenantDir+"/tenant compat-syscall")
		withTenant(t, cfg)
		cfg.UserNamespace = userns
		cfg.IO = runtime.IO{Stdout: out, Stderr: out}
		c := create(t, rt, NewID("seccomp"), cfg)
		require.NoError(t, c.Start(ctx))
		_, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Contains(t, out.String(), "Seccomp:\t2", "a seccomp filter confines the container (userns %v): %s", userns, out)
		require.NotContains(t, out.String(), "unshare-allowed")
		require.Contains(t, out.String(), "unshare-user: EPERM", "userns %v: %s", userns, out)
		if !strings.Contains(out.String(), "compat-syscall: unsupported") {
			require.Contains(t, out.String(), "compat-syscall: killed by SIGSYS", "32-bit system calls are refused: %s", out)
		}
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	}
}
