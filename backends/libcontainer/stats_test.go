package libcontainer_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// The engine's stats beyond the basics: what the processes hold (threads,
// descriptors, a socket), the network namespace's interfaces, the writable
// layer of a container from an image (what it wrote, and nothing a link
// it planted there leads to), and the processes the OOM killer killed
// while the container ran on.
func TestStatsDetails(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt := (&harness{}).Open(t)
	base, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{base}, "/bin/sh")
	im.Tags = []string{"stats-test:1"}
	_, err = rt.Images().ImportReader(ctx, bytes.NewReader(imagetest.DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)

	// 4 MiB written; a link to the host's root and one to the image's
	// tree, which a walk that followed links would count; a listening
	// socket; a child the OOM killer kills (the string doubles until
	// the limit stops it), after which the container runs on.
	script := `dd if=/dev/zero of=/written bs=1M count=4 2>/dev/null
ln -s / /host-root; ln -s /bin /image-bin
nc -l -p 7777 </dev/null >/dev/null 2>&1 &
sh -c 'x=0123456789abcdef; while true; do x=$x$x; done'
echo ready; exec sleep 1000`
	var out bytes.Buffer
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	spec := runtime.DefaultSpec("", "/bin/sh", "-c", script)
	limit := int64(32 << 20)
	spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	if b, err := os.ReadFile("/proc/swaps"); err == nil && strings.Count(strings.TrimSpace(string(b)), "\n") > 0 {
		spec.Linux.Resources.Memory.Swap = &limit // memory and swap together
	}
	c, err := rt.Create(ctx, "stats-details", &runtime.Config{Spec: spec, Image: "stats-test:1", IO: runtime.IO{Stdout: w, Stderr: w}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	require.NoError(t, c.Start(ctx))
	w.Close()
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), "ready") {
		n, err := r.Read(buf)
		require.NoError(t, err, "output: %s", out.String())
		out.Write(buf[:n])
	}

	s, err := c.Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, s.Pids, "nc and sleep")
	require.GreaterOrEqual(t, s.Process.Threads, uint64(2))
	require.GreaterOrEqual(t, s.Process.FileDescriptors, uint64(6), "each has its three standard streams")
	require.EqualValues(t, 1, s.Process.Sockets, "nc's listening socket")
	var names []string
	for _, n := range s.Network {
		names = append(names, n.Name)
	}
	require.Equal(t, []string{"lo"}, names, "the container's own network namespace")
	fs := s.Filesystem
	require.NotNil(t, fs)
	require.GreaterOrEqual(t, fs.UsedBytes, uint64(4<<20), "the file written")
	require.Less(t, fs.UsedBytes, uint64(16<<20), "and not what the links lead to")
	require.GreaterOrEqual(t, fs.UsedInodes, uint64(3))
	require.Positive(t, fs.Capacity)
	require.Positive(t, fs.Inodes)
	require.GreaterOrEqual(t, s.Memory.OOMKills, uint64(1), "the child the OOM killer killed")
	require.Positive(t, s.Memory.RSS+s.Memory.Cache)
	require.Positive(t, s.Memory.PageFaults, "the doubling string faulted pages in")
}
