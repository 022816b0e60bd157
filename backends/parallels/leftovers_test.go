package parallels_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"
)

// leftovers lists what is still held for id under root: the engine's state
// directories, the runtime's disk of the container and its volume records,
// mounts, cgroups and loop devices backed by its disk.
func leftovers(t *testing.T, root, id string) []string {
	base := filepath.Join(root, "parallels")
	var left []string
	for _, p := range []string{filepath.Join(base, "containers", id), filepath.Join(base, "runc", id), filepath.Join(root, "disks", id)} {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	recs, _ := filepath.Glob(filepath.Join(root, "volumes", "records", id+".*"))
	left = append(left, recs...)
	for _, ctl := range []string{"memory", "cpu", "pids", "freezer", "devices"} {
		p := filepath.Join("/sys/fs/cgroup", ctl, "berth-parallels", id)
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	require.NoError(t, err)
	for _, m := range ms {
		if strings.Contains(m.Mountpoint, id) {
			left = append(left, "mount "+m.Mountpoint)
		}
	}
	disk := filepath.Join(root, "disks", id, "disk.img")
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), disk) {
			left = append(left, "/dev/"+e.Name())
		}
	}
	return left
}
