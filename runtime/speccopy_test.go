package runtime

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// copySpec gives a spec equal to the original (as JSON sees it too) that
// shares nothing with it: changing the copy anywhere, however deep,
// leaves the original as it was.
func TestCopySpec(t *testing.T) {
	s := DefaultSpec("/rootfs", "/bin/sh", "-c", "true")
	sc, err := DefaultSeccompProfile(s)
	require.NoError(t, err)
	s.Linux.Seccomp = sc
	limit, weight := int64(64<<20), uint16(100)
	s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}, BlockIO: &specs.LinuxBlockIO{Weight: &weight}}
	s.Annotations = map[string]string{"a": "b"}
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/hook", Args: []string{"x"}}}}
	s.Windows = &specs.Windows{CredentialSpec: map[string]any{"k": []any{"v", 1.0}}}
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	before, err := json.Marshal(s)
	require.NoError(t, err)

	c := copySpec(s)
	assert.Equal(t, s, c)
	after, err := json.Marshal(c)
	require.NoError(t, err)
	assert.JSONEq(t, string(before), string(after))

	c.Process.Args[0] = "/evil"
	c.Process.Env = append(c.Process.Env[:0], "X=1")
	c.Process.Capabilities.Bounding[0] = "CAP_SYS_ADMIN"
	c.Linux.Seccomp.Syscalls[0].Names[0] = "evil"
	c.Linux.Seccomp.Syscalls[0].Action = specs.ActAllow
	*c.Linux.Resources.Memory.Limit = 1
	*c.Linux.Resources.BlockIO.Weight = 1
	c.Annotations["a"] = "evil"
	c.Hooks.CreateRuntime[0].Args[0] = "evil"
	c.Windows.CredentialSpec.(map[string]any)["k"].([]any)[0] = "evil"
	c.Linux.UIDMappings[0].HostID = 0
	c.Mounts[0].Options[0] = "evil"
	c.Linux.MaskedPaths[0] = "/"
	now, err := json.Marshal(s)
	require.NoError(t, err)
	assert.JSONEq(t, string(before), string(now), "the original changed with its copy")
	assert.Nil(t, copySpec(nil))
}
