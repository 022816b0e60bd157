package libcontainer

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
)

// Stats implements driver.StatsReader: the container's cgroups, what its
// processes hold (from /proc), its network namespace's interfaces, and
// its writable layer. A part that cannot be read stays zero (or nil);
// only the cgroups' reading failing fails the call.
func (r *Runtime) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	c, err := r.load(id)
	if err != nil {
		return nil, err
	}
	s, err := c.Stats()
	if err != nil {
		return nil, classify(err)
	}
	out := &driver.Stats{Time: time.Now().UTC()}
	if cs := s.CgroupStats; cs != nil {
		cgroupStats(out, cs)
	}
	if m := oomCounter(c); m != nil {
		out.Memory.OOMKills, _ = m.OOMKillCount()
	}
	if pids, err := c.Processes(); err == nil {
		out.Process = processStats(pids)
	}
	if st, err := c.State(); err == nil && st.InitProcessPid > 0 {
		out.Network, _ = netDev(filepath.Join("/proc", strconv.Itoa(st.InitProcessPid), "net/dev"))
	}
	if rec, err := r.readRecord(id); err == nil {
		out.Filesystem = r.filesystemStats(ctx, id, rec)
	}
	return out, nil
}

// cgroupStats copies the cgroups' reading into out, from cgroup v1's or
// v2's names.
func cgroupStats(out *driver.Stats, cs *cgroups.Stats) {
	mem := cs.MemoryStats
	out.MemoryUsage = mem.Usage.Usage
	if l := mem.Usage.Limit; l < 1<<62 {
		out.MemoryLimit = l
	}
	out.CPUUsageNanos = cs.CpuStats.CpuUsage.TotalUsage
	out.Pids = cs.PidsStats.Current
	out.PidsLimit = cs.PidsStats.Limit

	u := cs.CpuStats.CpuUsage
	t := cs.CpuStats.ThrottlingData
	out.CPU = driver.CPUStats{UserNanos: u.UsageInUsermode, SystemNanos: u.UsageInKernelmode,
		Periods: t.Periods, ThrottledPeriods: t.ThrottledPeriods, ThrottledNanos: t.ThrottledTime}

	out.Memory = driver.CgroupMemory(out.MemoryUsage, mem.Stats)
	out.Memory.MaxUsage, out.Memory.Failcnt = mem.Usage.MaxUsage, mem.Usage.Failcnt
	if _, v2 := mem.Stats["anon"]; v2 {
		out.Memory.Swap = mem.SwapOnlyUsage.Usage
	} else {
		out.Memory.Kernel = mem.KernelUsage.Usage
	}
	out.BlockIO = driver.CgroupBlockIO(blockIO(cs.BlkioStats.IoServiceBytesRecursive), blockIO(cs.BlkioStats.IoServicedRecursive))
}

// blockIO are runc's I/O entries as the driver's.
func blockIO(entries []cgroups.BlkioStatEntry) []driver.BlockIOEntry {
	out := make([]driver.BlockIOEntry, len(entries))
	for i, e := range entries {
		out[i] = driver.BlockIOEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value}
	}
	return out
}

// processStats counts the threads, open descriptors and sockets of pids
// (the processes of the container's cgroup); one that exits meanwhile
// counts for what was read of it.
func processStats(pids []int) driver.ProcessStats {
	var ps driver.ProcessStats
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "Threads:"); ok {
					n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					ps.Threads += n
				}
			}
		}
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		ps.FileDescriptors += uint64(len(fds))
		for _, fd := range fds {
			// A descriptor's link names what it is open on; it is read,
			// never followed.
			if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				ps.Sockets++
			}
		}
	}
	return ps
}

// netDev reads the interface counters of /proc/<pid>/net/dev: those of
// that process's network namespace.
func netDev(path string) ([]driver.NetworkStats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []driver.NetworkStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue
		}
		v := make([]uint64, 16)
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		// receive: bytes packets errs drop fifo frame compressed
		// multicast; transmit: bytes packets errs drop ...
		out = append(out, driver.NetworkStats{Name: strings.TrimSpace(name),
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11]})
	}
	return out, sc.Err()
}

// filesystemStats reads the container's writable layer: the overlay's
// upper directory of a container from an image, walked for what it
// holds; a root filesystem that is a filesystem of its own (a root
// disk), all of which is the container's; nil for a root directory of the
// caller's, which berth does not walk. A walk the caller's deadline cuts
// short reads nil.
func (r *Runtime) filesystemStats(ctx context.Context, id string, rec *record) *driver.FilesystemStats {
	var fsPath string
	walk := false
	switch {
	case rec.ImageTree != "":
		fsPath, walk = filepath.Join(r.dir(id), "rw", "upper"), true
	case rec.Spec != nil && rec.Spec.Root != nil && ownFilesystem(rec.Spec.Root.Path):
		fsPath = rec.Spec.Root.Path
	default:
		return nil
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(fsPath, &sfs); err != nil {
		return nil
	}
	bsize := uint64(sfs.Bsize)
	out := &driver.FilesystemStats{Capacity: sfs.Blocks * bsize, Inodes: sfs.Files, InodesFree: sfs.Ffree}
	if !walk {
		out.UsedBytes = (sfs.Blocks - sfs.Bfree) * bsize
		out.UsedInodes = sfs.Files - sfs.Ffree
		return out
	}
	var dev uint64
	var root unix.Stat_t
	if err := unix.Lstat(fsPath, &root); err != nil {
		return nil
	}
	dev = root.Dev
	err := filepath.WalkDir(fsPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile: the tenant writes as berth reads
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Dev != dev {
			if d.IsDir() && p != fsPath {
				return filepath.SkipDir // another filesystem: not the layer's
			}
			return nil
		}
		out.UsedInodes++
		out.UsedBytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return nil
	}
	return out
}

// ownFilesystem reports whether path is the root of a filesystem mounted
// there (its device is not its parent's).
func ownFilesystem(path string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(path, &st) != nil || unix.Stat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}
