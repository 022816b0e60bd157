package runtimetest

import (
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

func testUserNamespace(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().UserNamespace {
		cfg := h.Config(t, "/bin/true")
		cfg.UserNamespace = true
		_, err := rt.Create(ctx, NewID("nouserns"), cfg)
		require.Truef(t, isNotImplemented(err), "user namespace on a backend without them: %v", err)
		return
	}
	type result struct {
		id  string
		out string
		es  runtime.ExitStatus
		c   *runtime.Container
		rng specs.LinuxIDMapping
	}
	var results []result
	for i := 0; i < 2; i++ {
		out := newBuffer()
		cfg := h.Config(t, "/bin/sh", "-c", "cat /proc/self/uid_map; touch /userns-probe && ls -n /userns-probe && rm /userns-probe && echo wrote-rootfs; mknod /dev/probe b 7 0 && echo mknod-allowed")
		cfg.UserNamespace = true
		// Separate writers: an engine may not keep the order of stdout
		// and stderr (Docker copies them apart), and the checks read
		// stdout from its first line.
		cfg.IO = runtime.IO{Stdout: out, Stderr: newBuffer()}
		id := NewID("userns")
		c := create(t, rt, id, cfg)
		info, err := c.Info(ctx)
		require.NoError(t, err)
		require.Len(t, info.Spec.Linux.UIDMappings, 1)
		require.NoError(t, c.Start(ctx))
		es, err := c.Wait(ctx)
		require.NoError(t, err)
		results = append(results, result{id, out.String(), es, c, info.Spec.Linux.UIDMappings[0]})
	}
	for _, r := range results {
		fields := strings.Fields(r.out)
		require.GreaterOrEqual(t, len(fields), 3, "output: %q", r.out)
		require.Equal(t, "0", fields[0])
		require.Equal(t, strconv.FormatUint(uint64(r.rng.HostID), 10), fields[1], "uid_map shows the allocated block")
		require.NotEqual(t, "0", fields[1], "root in the container is not host root")
		require.Contains(t, r.out, "wrote-rootfs", "root in the container can write its root filesystem: %q", r.out)
		require.Contains(t, r.out, " 0 ", "the file belongs to root inside: %q", r.out)
		require.NotContains(t, r.out, "mknod-allowed")
	}
	a, b := results[0].rng, results[1].rng
	if rt.Capabilities().UserNamespaceShared {
		require.Equal(t, a, b, "the engine's one mapping is reported for every container")
	} else {
		require.True(t, a.HostID+a.Size <= b.HostID || b.HostID+b.Size <= a.HostID, "ID ranges overlap: %v %v", a, b)
	}
	for _, r := range results {
		require.NoError(t, r.c.Delete(ctx, runtime.DeleteOptions{}))
		requireGone(t, h, rt, r.id, nil)
	}
}
