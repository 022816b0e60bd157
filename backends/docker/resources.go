package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

// Pause implements driver.Pauser (the cgroup freezer, through Docker).
func (r *Runtime) Pause(ctx context.Context, id string) error {
	return r.do(ctx, id, func(did string) error {
		_, err := r.eng.ContainerPause(ctx, did, client.ContainerPauseOptions{})
		if err != nil && strings.Contains(err.Error(), "container not running") {
			// runc refuses to freeze an init that ended its main thread
			// alone while its other threads run on (a zombie to runc);
			// Docker answers 500.
			return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
		return err
	})
}

// Resume implements driver.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	return r.do(ctx, id, func(did string) error {
		_, err := r.eng.ContainerUnpause(ctx, did, client.ContainerUnpauseOptions{})
		return err
	})
}

// Update implements driver.Updater. Docker has no way back to an unlimited
// memory once a limit is set.
func (r *Runtime) Update(ctx context.Context, id string, res *driver.Resources) error {
	var out container.Resources
	if res.MemoryLimit != nil {
		if *res.MemoryLimit == -1 {
			return notImplemented("Docker cannot lift a memory limit")
		}
		out.Memory = *res.MemoryLimit
	}
	if res.CPUShares != nil {
		out.CPUShares = int64(*res.CPUShares)
	}
	if res.CPUQuota != nil {
		out.CPUQuota = *res.CPUQuota
	}
	if res.CPUPeriod != nil {
		out.CPUPeriod = int64(*res.CPUPeriod)
	}
	if res.PidsLimit != nil {
		v := *res.PidsLimit
		out.PidsLimit = &v
	}
	if out.Memory != 0 {
		// Docker refuses a new memory limit alone once the kernel
		// accounts swap: the swap limit goes with it, kept if the spec
		// set one, else unlimited as at create.
		c, err := r.inspect(ctx, id)
		if err != nil {
			return err
		}
		out.MemorySwap = -1
		if c.HostConfig != nil && c.HostConfig.MemorySwap > 0 {
			out.MemorySwap = c.HostConfig.MemorySwap
		}
	}
	return r.do(ctx, id, func(did string) error {
		res, err := r.eng.ContainerUpdate(ctx, did, client.ContainerUpdateOptions{Resources: &out})
		if err == nil && len(res.Warnings) > 0 {
			return notImplemented("Docker dropped part of the update: %s", strings.Join(res.Warnings, "; "))
		}
		return err
	})
}

// Stats implements driver.StatsReader with one sample of Docker's stats.
func (r *Runtime) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	var s container.StatsResponse
	err := r.do(ctx, id, func(did string) error {
		res, err := r.eng.ContainerStats(ctx, did, client.ContainerStatsOptions{Stream: false})
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
			return fmt.Errorf("stats: %w: %w", err, errdefs.ErrUnknown)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &driver.Stats{
		MemoryUsage:   s.MemoryStats.Usage,
		MemoryLimit:   s.MemoryStats.Limit,
		CPUUsageNanos: s.CPUStats.CPUUsage.TotalUsage,
		Pids:          s.PidsStats.Current,
		PidsLimit:     s.PidsStats.Limit,
		Time:          s.Read.UTC(),
	}
	u, th := s.CPUStats.CPUUsage, s.CPUStats.ThrottlingData
	out.CPU = driver.CPUStats{UserNanos: u.UsageInUsermode, SystemNanos: u.UsageInKernelmode,
		Periods: th.Periods, ThrottledPeriods: th.ThrottledPeriods, ThrottledNanos: th.ThrottledTime}
	out.Memory = driver.CgroupMemory(s.MemoryStats.Usage, s.MemoryStats.Stats)
	out.Memory.MaxUsage, out.Memory.Failcnt = s.MemoryStats.MaxUsage, s.MemoryStats.Failcnt
	out.BlockIO = driver.CgroupBlockIO(blockIO(s.BlkioStats.IoServiceBytesRecursive), blockIO(s.BlkioStats.IoServicedRecursive))
	for _, name := range slices.Sorted(maps.Keys(s.Networks)) {
		n := s.Networks[name]
		out.Network = append(out.Network, driver.NetworkStats{Name: name,
			RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped})
	}
	// Docker shows the host's memory, or the cgroup's "max", for no limit.
	if out.MemoryLimit >= 1<<62 || r.memTotal > 0 && out.MemoryLimit >= r.memTotal {
		out.MemoryLimit = 0
	}
	if out.PidsLimit >= 1<<62 {
		out.PidsLimit = 0
	}
	if out.Time.IsZero() {
		out.Time = time.Now().UTC()
	}
	return out, nil
}

// blockIO are Docker's I/O entries as the driver's.
func blockIO(entries []container.BlkioStatEntry) []driver.BlockIOEntry {
	out := make([]driver.BlockIOEntry, len(entries))
	for i, e := range entries {
		out[i] = driver.BlockIOEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value}
	}
	return out
}
