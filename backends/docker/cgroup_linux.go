package docker

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthrun/berth/internal/reap"
	"golang.org/x/sys/unix"
)

// killLeftInCgroup kills what is left of a stopped container in its
// cgroup, when the daemon is on this host. runc takes a container whose
// init ended its main thread alone for stopped, and leaves the init's
// other threads running (a tenant's process can do that): Docker then
// removes the container, and its processes live on outside any control.
// The pids are read from the container's own cgroup (Docker's cgroupfs or
// systemd layout, v1 or v2), so a reused pid is still the container's.
//
// A frozen process dies of SIGKILL only once thawed: the first SIGKILLs are
// sent, then the container's freezer thawed (a pause may have caught the
// threads as their leader ended; runc thaws for SIGKILL likewise).
func killLeftInCgroup(ctx context.Context, dockerID string) error {
	dirs := cgroupDirsOf(dockerID)
	list := func() ([]int, error) {
		var pids []int
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return pids, nil
	}
	pids, _ := list()
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for _, d := range dirs {
		// cgroup v1's freezer, or v2's.
		_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
		_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
	}
	return reap.KillAll(ctx, list)
}

// cgroupDirsOf lists the cgroup directories Docker may have made for the
// container on this host.
func cgroupDirsOf(dockerID string) []string {
	var out []string
	hiers, _ := filepath.Glob("/sys/fs/cgroup/*")
	hiers = append(hiers, "/sys/fs/cgroup")
	for _, h := range hiers {
		for _, rel := range []string{"docker/" + dockerID, "system.slice/docker-" + dockerID + ".scope"} {
			d := filepath.Join(h, rel)
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				out = append(out, d)
			}
		}
	}
	return out
}

// inCgroupOf reports whether process pid is in one of the cgroups Docker
// made for the container.
func inCgroupOf(pid int, dockerID string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (strings.HasSuffix(parts[2], "/docker/"+dockerID) || strings.HasSuffix(parts[2], "/docker-"+dockerID+".scope")) {
			return true
		}
	}
	return false
}
