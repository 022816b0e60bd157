package runtimetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// loopOf returns the loop device (loopN) backed by img, or "".
func loopOf(t *testing.T, img string) string {
	t.Helper()
	ents, err := os.ReadDir("/sys/block")
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.TrimSpace(string(b)) == img {
			return e.Name()
		}
	}
	return ""
}

// loopState is what the host kernel knows of a loop device that a tenant
// might change: its backing file, flags, geometry and partitions.
func loopState(t *testing.T, dev string) string {
	t.Helper()
	var parts []string
	for _, f := range []string{"backing_file", "autoclear", "partscan", "offset", "sizelimit", "dio", "ro"} {
		b, _ := os.ReadFile(filepath.Join("/sys/block", dev, "loop", f))
		parts = append(parts, f+"="+strings.TrimSpace(string(b)))
	}
	for _, f := range []string{"ro", "size", "queue/logical_block_size"} {
		b, _ := os.ReadFile(filepath.Join("/sys/block", dev, f))
		parts = append(parts, f+"="+strings.TrimSpace(string(b)))
	}
	ents, _ := os.ReadDir(filepath.Join("/sys/block", dev))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), dev+"p") {
			parts = append(parts, "partition "+e.Name())
		}
	}
	return strings.Join(parts, " ")
}

// A container holding a raw loop device can neither release it (so that
// its number would go to the next attach anywhere on the host, another
// tenant's, while it keeps the node and the cgroup rule), nor re-point it,
// nor change how the host kernel reads it (partition scan, block size,
// capacity): every such ioctl is denied, whatever the request's upper
// bits; ordinary ioctls still work.
func testRawDeviceIoctls(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.RawBlock || !caps.UserNamespace {
		t.Skip("backend has no raw block devices in user namespaces")
	}
	img := zeroImage(t, 8<<20)
	// A partition table the host kernel would parse if the tenant turned
	// on the partition scan.
	mbr := make([]byte, 512)
	copy(mbr[446:], []byte{0x00, 0, 0, 0, 0x83, 0, 0, 0, 0x08, 0, 0, 0, 0x00, 0x20, 0, 0})
	mbr[510], mbr[511] = 0x55, 0xAA
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(mbr, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	out := newBuffer()
	cfg := h.Config(t, tenantDir+"/tenant", "ioctls", "/dev/xvdb")
	withTenant(t, cfg)
	cfg.UserNamespace = true
	cfg.Volumes = []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}}
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	id := NewID("rawioctl")
	c := create(t, rt, id, cfg)
	dev := loopOf(t, img)
	require.NotEmpty(t, dev, "the raw volume is on a loop device")
	before := loopState(t, dev)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	got := out.String()
	require.Contains(t, got, "BLKGETSIZE64: ok", "ordinary ioctls work: %s", got)
	for _, req := range []string{"LOOP_CLR_FD", "LOOP_CLR_FD+hi", "LOOP_SET_STATUS64", "LOOP_CHANGE_FD", "LOOP_SET_CAPACITY", "LOOP_SET_DIRECT_IO", "LOOP_SET_BLOCK_SIZE"} {
		require.Contains(t, got, req+": EPERM", "%s is denied: %s", req, got)
	}
	// The block layer's own (CAP_SYS_ADMIN in the initial namespace).
	for _, req := range []string{"BLKRRPART", "BLKPG"} {
		require.Regexp(t, req+`: (EPERM|EACCES)`, got, "%s is denied: %s", req, got)
	}
	// The container still exists: its device is still the tenant's file,
	// as the host kernel left it, and nobody else can get its number.
	require.Equal(t, dev, loopOf(t, img), "the loop device still backs the image")
	require.Equal(t, before, loopState(t, dev), "the tenant changed how the host reads its device")
	other := zeroImage(t, 4<<20)
	cfg2 := h.Config(t, "/bin/true")
	cfg2.UserNamespace = true
	cfg2.Volumes = []volume.Spec{{Source: other, Destination: "/dev/xvdc", Mode: volume.ModeRawBlock}}
	c2 := create(t, rt, NewID("rawnext"), cfg2)
	require.NotEqual(t, dev, loopOf(t, other), "the next attach got the first tenant's device number")
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
	requireGone(t, h, rt, id, nil)
}

// A container that holds no block device of its own cannot do through a
// descriptor another container hands it (SCM_RIGHTS over a unix socket in a
// volume they share) what the holder itself may not: the device ioctl
// rules are every container's.
func testDeviceHandedOver(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.RawBlock || !caps.UserNamespace {
		t.Skip("backend has no raw block devices in user namespaces")
	}
	shared := fixture.TempDir(t)
	require.NoError(t, os.Chmod(shared, 0o777))
	img := zeroImage(t, 4<<20)

	holderOut := newBuffer()
	holder := h.Config(t, tenantDir+"/tenant", "send-fd", "/shared/sock", "/dev/xvdb")
	withTenant(t, holder)
	holder.UserNamespace = true
	holder.Volumes = []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}, {Source: shared, Destination: "/shared"}}
	holder.IO = runtime.IO{Stdout: holderOut, Stderr: holderOut}
	hc := create(t, rt, NewID("holder"), holder)
	require.NoError(t, hc.Start(ctx))
	require.NoError(t, holderOut.waitFor(ctx, "listening"))
	dev := loopOf(t, img)
	require.NotEmpty(t, dev)
	before := loopState(t, dev)

	out := newBuffer()
	plain := h.Config(t, tenantDir+"/tenant", "recv-ioctls", "/shared/sock")
	withTenant(t, plain)
	plain.Volumes = []volume.Spec{{Source: shared, Destination: "/shared"}}
	plain.IO = runtime.IO{Stdout: out, Stderr: out}
	pc := create(t, rt, NewID("plain"), plain)
	require.NoError(t, pc.Start(ctx))
	_, err := pc.Wait(ctx)
	require.NoError(t, err)
	got := out.String()
	require.Contains(t, got, "BLKGETSIZE64: ok", "the descriptor arrived: %s", got)
	for _, req := range []string{"LOOP_CLR_FD", "LOOP_SET_STATUS64", "LOOP_CHANGE_FD"} {
		require.Contains(t, got, req+": EPERM", "%s through a handed descriptor: %s", req, got)
	}
	_, err = hc.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, dev, loopOf(t, img), "the loop device still backs the image")
	require.Equal(t, before, loopState(t, dev))
	require.NoError(t, pc.Delete(ctx, runtime.DeleteOptions{}))
	require.NoError(t, hc.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
}

// A container that kept a descriptor of its raw device across a hot detach
// still reaches the device (Linux cannot take a descriptor back): the
// device stays its own until it is deleted, and no other container gets it
// meanwhile.
func testDetachedDeviceStaysItsOwn(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.RawBlock || !caps.UserNamespace || !caps.Exec {
		t.Skip("backend has no hot attach of raw devices")
	}
	img := zeroImage(t, 4<<20)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	require.NoError(t, err)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })

	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = true
	id := NewID("keeper")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: dev, Destination: "/dev/vdb", Mode: volume.ModeRawBlock}))
	held := newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "exec 3<>/dev/vdb; echo holding; exec sleep 1000"}}, runtime.IO{Stdout: held, Stderr: held})
	require.NoError(t, err)
	require.NoError(t, held.waitFor(ctx, "holding"))
	require.NoError(t, c.DetachVolume(ctx, "/dev/vdb"))
	vols, err := c.Volumes(ctx)
	require.NoError(t, err)
	require.Empty(t, vols)

	other := h.Config(t, "/bin/true")
	other.UserNamespace = true
	other.Volumes = []volume.Spec{{Source: dev, Destination: "/dev/vdb", Mode: volume.ModeRawBlock}}
	_, err = rt.Create(ctx, NewID("next"), other)
	require.Truef(t, isFailedPrecondition(err), "the device went to another container while the first holds it: %v", err)

	_ = p.Signal(ctx, 9)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	next := create(t, rt, NewID("next"), other)
	require.NoError(t, next.Delete(ctx, runtime.DeleteOptions{}))
}
