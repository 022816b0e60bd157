package driver

import "strings"

// CgroupMemory reads the memory of a cgroup from its usage and its
// memory.stat counters, by cgroup v2's names (anon, file...) or, without
// them, by v1's hierarchical totals (total_rss, total_cache...): what the
// engines report (runc's cgroups, Docker's stats) as they read it. The
// fields memory.stat does not hold (MaxUsage, Failcnt, OOMKills, the
// kernel's usage on v1, swap on v2) are the caller's.
func CgroupMemory(usage uint64, stat map[string]uint64) MemoryStats {
	var m MemoryStats
	var inactive uint64
	if _, v2 := stat["anon"]; v2 {
		m.RSS, m.Cache, m.MappedFile = stat["anon"], stat["file"], stat["file_mapped"]
		m.Kernel = stat["kernel"]
		m.PageFaults, m.MajorPageFaults = stat["pgfault"], stat["pgmajfault"]
		inactive = stat["inactive_file"]
	} else {
		m.RSS, m.Cache, m.MappedFile = stat["total_rss"], stat["total_cache"], stat["total_mapped_file"]
		m.Swap = stat["total_swap"]
		m.PageFaults, m.MajorPageFaults = stat["total_pgfault"], stat["total_pgmajfault"]
		inactive = stat["total_inactive_file"]
	}
	if inactive < usage {
		m.WorkingSet = usage - inactive
	}
	return m
}

// BlockIOEntry is one line of a cgroup's I/O counters: a device, an
// operation (Read, Write, Sync, Total...) and its count.
type BlockIOEntry struct {
	Major, Minor uint64
	Op           string
	Value        uint64
}

// CgroupBlockIO sums a cgroup's I/O counters by device, in the order the
// devices first appear: bytes from the service bytes' entries, operations
// from the serviced ones (reads and writes; the other operations are
// other views of the same I/O).
func CgroupBlockIO(bytes, ops []BlockIOEntry) []BlockIOStats {
	type dev struct{ major, minor uint64 }
	var order []dev
	byDev := map[dev]*BlockIOStats{}
	add := func(entries []BlockIOEntry, read, write func(*BlockIOStats) *uint64) {
		for _, e := range entries {
			d := dev{e.Major, e.Minor}
			b, ok := byDev[d]
			if !ok {
				b = &BlockIOStats{Major: e.Major, Minor: e.Minor}
				byDev[d] = b
				order = append(order, d)
			}
			switch strings.ToLower(e.Op) {
			case "read":
				*read(b) += e.Value
			case "write":
				*write(b) += e.Value
			}
		}
	}
	add(bytes, func(b *BlockIOStats) *uint64 { return &b.ReadBytes }, func(b *BlockIOStats) *uint64 { return &b.WriteBytes })
	add(ops, func(b *BlockIOStats) *uint64 { return &b.Reads }, func(b *BlockIOStats) *uint64 { return &b.Writes })
	var out []BlockIOStats
	for _, d := range order {
		out = append(out, *byDev[d])
	}
	return out
}
