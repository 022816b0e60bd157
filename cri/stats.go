package cri

import (
	"context"
	"time"

	"github.com/berthrun/berth/runtime"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criResources describes a spec's limits as the CRI does.
func criResources(spec *specs.Spec) *cri.ContainerResources {
	r := spec.Linux.Resources
	if r == nil {
		return nil
	}
	out := &cri.LinuxContainerResources{}
	if m := r.Memory; m != nil && m.Limit != nil {
		out.MemoryLimitInBytes = *m.Limit
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period)
		}
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
	}
	if spec.Process != nil && spec.Process.OOMScoreAdj != nil {
		out.OomScoreAdj = int64(*spec.Process.OOMScoreAdj)
	}
	return &cri.ContainerResources{Linux: out}
}

// runningStats reads a running (or paused) container's usage, with its
// runtime info; a container that does not run has none (nil stats).
func (s *RuntimeService) runningStats(ctx context.Context, c *container) (*runtime.Stats, *runtime.Info, error) {
	rc, err := s.runtimeContainer(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	info, err := rc.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	if info.Status != runtime.StatusRunning && info.Status != runtime.StatusPaused {
		return nil, info, nil
	}
	stats, err := rc.Stats(ctx)
	if errdefs.IsFailedPrecondition(err) || errdefs.IsNotFound(err) {
		return nil, info, nil // ended meanwhile
	}
	if err != nil {
		return nil, nil, err
	}
	return stats, info, nil
}

// containerStats reads a container's usage from its cgroups. A container
// that does not run has none: its attributes come with zero readings.
func (s *RuntimeService) containerStats(ctx context.Context, c *container) (*cri.ContainerStats, error) {
	st := &cri.ContainerStats{Attributes: &cri.ContainerAttributes{
		Id: c.ID, Metadata: c.cfg.GetMetadata(), Labels: c.cfg.GetLabels(), Annotations: c.cfg.GetAnnotations(),
	}}
	now := time.Now().UnixNano()
	st.Cpu = &cri.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &cri.UInt64Value{}}
	st.Memory = &cri.MemoryUsage{Timestamp: now, WorkingSetBytes: &cri.UInt64Value{}}
	st.WritableLayer = &cri.FilesystemUsage{Timestamp: now, FsId: &cri.FilesystemIdentifier{Mountpoint: s.dir}, UsedBytes: &cri.UInt64Value{}, InodesUsed: &cri.UInt64Value{}}
	stats, _, err := s.runningStats(ctx, c)
	if err != nil {
		return nil, err
	}
	if stats == nil {
		return st, nil // not running: no usage
	}
	ts := stats.Time.UnixNano()
	m := stats.Memory
	st.Cpu = &cri.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &cri.UInt64Value{Value: stats.CPUUsageNanos}}
	st.Memory = &cri.MemoryUsage{Timestamp: ts, WorkingSetBytes: &cri.UInt64Value{Value: m.WorkingSet},
		UsageBytes: &cri.UInt64Value{Value: stats.MemoryUsage}, RssBytes: &cri.UInt64Value{Value: m.RSS},
		PageFaults: &cri.UInt64Value{Value: m.PageFaults}, MajorPageFaults: &cri.UInt64Value{Value: m.MajorPageFaults}}
	if stats.MemoryLimit > 0 {
		st.Memory.AvailableBytes = &cri.UInt64Value{Value: stats.MemoryLimit - min(m.WorkingSet, stats.MemoryLimit)}
	}
	if f := stats.Filesystem; f != nil {
		st.WritableLayer.Timestamp = ts
		st.WritableLayer.UsedBytes.Value, st.WritableLayer.InodesUsed.Value = f.UsedBytes, f.UsedInodes
	}
	return st, nil
}

// ContainerStats reads one container's usage.
func (s *RuntimeService) ContainerStats(ctx context.Context, req *cri.ContainerStatsRequest) (*cri.ContainerStatsResponse, error) {
	c, err := s.state.container(req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	st, err := s.containerStats(ctx, c)
	if err != nil {
		return nil, grpcError(err)
	}
	return &cri.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats reads the usage of the containers that pass the
// filter.
func (s *RuntimeService) ListContainerStats(ctx context.Context, req *cri.ListContainerStatsRequest) (*cri.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	resp := &cri.ListContainerStatsResponse{}
	for _, c := range s.filterContainers(f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector()) {
		st, err := s.containerStats(ctx, c)
		if err != nil {
			continue // removed meanwhile
		}
		resp.Stats = append(resp.Stats, st)
	}
	return resp, nil
}

// podStats sums its containers' usage.
func (s *RuntimeService) podStats(ctx context.Context, sb *sandbox) *cri.PodSandboxStats {
	now := time.Now().UnixNano()
	out := &cri.PodSandboxStats{
		Attributes: &cri.PodSandboxAttributes{Id: sb.ID, Metadata: sb.cfg.GetMetadata(), Labels: sb.cfg.GetLabels(), Annotations: sb.cfg.GetAnnotations()},
		Linux: &cri.LinuxPodSandboxStats{
			Cpu:    &cri.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &cri.UInt64Value{}},
			Memory: &cri.MemoryUsage{Timestamp: now, WorkingSetBytes: &cri.UInt64Value{}},
		},
	}
	if st := s.podNetworkStats(ctx, sb); st != nil {
		out.Linux.Network = networkUsage(st)
	}
	for _, c := range s.podContainers(sb.ID) {
		st, err := s.containerStats(ctx, c)
		if err != nil {
			continue
		}
		out.Linux.Containers = append(out.Linux.Containers, st)
		out.Linux.Cpu.UsageCoreNanoSeconds.Value += st.GetCpu().GetUsageCoreNanoSeconds().GetValue()
		out.Linux.Memory.WorkingSetBytes.Value += st.GetMemory().GetWorkingSetBytes().GetValue()
	}
	return out
}

// PodSandboxStats reads a pod's usage.
func (s *RuntimeService) PodSandboxStats(ctx context.Context, req *cri.PodSandboxStatsRequest) (*cri.PodSandboxStatsResponse, error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &cri.PodSandboxStatsResponse{Stats: s.podStats(ctx, sb)}, nil
}

// ListPodSandboxStats reads the usage of the pods that pass the filter.
func (s *RuntimeService) ListPodSandboxStats(ctx context.Context, req *cri.ListPodSandboxStatsRequest) (*cri.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	resp := &cri.ListPodSandboxStatsResponse{}
	for _, sb := range s.filterSandboxes(f.GetId(), f.GetLabelSelector()) {
		resp.Stats = append(resp.Stats, s.podStats(ctx, sb))
	}
	return resp, nil
}

// networkUsage is a pod's network as the CRI's stats give it: the first
// interface but the loopback as the default one, the others after it.
func networkUsage(st *runtime.Stats) *cri.NetworkUsage {
	out := &cri.NetworkUsage{Timestamp: st.Time.UnixNano()}
	for _, n := range st.Network {
		if n.Name == "lo" {
			continue
		}
		u := &cri.NetworkInterfaceUsage{Name: n.Name, RxBytes: &cri.UInt64Value{Value: n.RxBytes}, RxErrors: &cri.UInt64Value{Value: n.RxErrors},
			TxBytes: &cri.UInt64Value{Value: n.TxBytes}, TxErrors: &cri.UInt64Value{Value: n.TxErrors}}
		if out.DefaultInterface == nil {
			out.DefaultInterface = u
		} else {
			out.Interfaces = append(out.Interfaces, u)
		}
	}
	return out
}
