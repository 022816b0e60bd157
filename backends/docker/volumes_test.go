package docker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
	"github.com/berthrun/berth/volume"
)

// A directory volume and a tmpfs volume on the real daemons: readable and
// writable from inside, with their options (nosuid, nodev, the tmpfs's
// size), the files the container's root writes in the directory its
// root's on the host, and nothing left mounted after delete.
func TestDirectoryAndTmpfsVolumes(t *testing.T) {
	for _, host := range []string{plainHost, usernsHost} {
		t.Run(host, func(t *testing.T) {
			requireDaemon(t, host)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			h := &harness{host: host}
			state := fixture.TempDir(t)
			rt := h.open(t, state)
			share := fixture.TempDir(t)
			require.NoError(t, os.WriteFile(filepath.Join(share, "from-host"), []byte("host-data\n"), 0o644))

			out := &fixture.SyncBuffer{}
			cfg := h.Config(t, "/bin/sh", "-c", strings.Join([]string{
				"cat /data/from-host",
				"echo from-container > /data/written && echo dir-write-ok",
				"head -c 3145728 /dev/zero > /scratch/three && echo tmpfs-3m-ok",
				"head -c 2097152 /dev/zero > /scratch/more 2>/dev/null || echo tmpfs-full",
				"grep -E ' /data | /scratch ' /proc/mounts",
				"id -u",
			}, "; "))
			cfg.UserNamespace = rt.Capabilities().UserNamespace
			cfg.Volumes = []volume.Spec{{Source: share, Destination: "/data"}, {Destination: "/scratch", TmpfsSize: 4 << 20}}
			cfg.IO = runtime.IO{Stdout: out, Stderr: out}
			id := runtimetest.NewID("dirtmpfs")
			c, err := rt.Create(ctx, id, cfg)
			require.NoError(t, err)
			require.NoError(t, c.Start(ctx))
			es, err := c.Wait(ctx)
			require.NoError(t, err)
			got := out.String()
			require.Equal(t, 0, es.Code, got)
			require.Contains(t, got, "host-data\n", "the container reads the host's file")
			require.Contains(t, got, "dir-write-ok")
			require.Contains(t, got, "tmpfs-3m-ok")
			require.Contains(t, got, "tmpfs-full", "the tmpfs holds its size and no more: %s", got)
			var dataLine, scratchLine string
			for _, l := range strings.Split(got, "\n") {
				f := strings.Fields(l)
				if len(f) >= 4 && f[1] == "/data" {
					dataLine = l
				}
				if len(f) >= 4 && f[1] == "/scratch" {
					scratchLine = l
				}
			}
			require.NotEmpty(t, dataLine, got)
			require.NotEmpty(t, scratchLine, got)
			for _, o := range []string{"nosuid", "nodev", "rw"} {
				require.Contains(t, strings.Split(strings.Fields(dataLine)[3], ","), o, dataLine)
				require.Contains(t, strings.Split(strings.Fields(scratchLine)[3], ","), o, scratchLine)
			}
			require.Equal(t, "tmpfs", strings.Fields(scratchLine)[2])
			require.Contains(t, strings.Split(strings.Fields(scratchLine)[3], ","), "size=4096k", scratchLine)

			b, err := os.ReadFile(filepath.Join(share, "written"))
			require.NoError(t, err)
			require.Equal(t, "from-container\n", string(b))
			fi, err := os.Stat(filepath.Join(share, "written"))
			require.NoError(t, err)
			require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid, "the container's root writes as the host's root (ID-mapped under userns-remap)")

			require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
			require.Empty(t, h.Leftovers(t, rt, id))
			ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
				keep := strings.HasPrefix(i.Mountpoint, state) || strings.HasPrefix(i.Mountpoint, share)
				return !keep, false
			})
			require.NoError(t, err)
			require.Empty(t, ms, "mounts left on the host after delete")
		})
	}
}
