package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/runtime"
)

// The pod sandbox metrics are cAdvisor's, by its names and labels (as the
// kubelet's CRI metrics provider and CRI-O give them), read from the
// runtime's stats of each running container: every metric has the base
// labels, some one or more of their own. Network metrics are the pod's,
// from its infra container's network namespace; the rest each
// container's. Seconds are whole seconds (the CRI's values are integers).

// baseLabelKeys are every metric's first labels, in order.
var baseLabelKeys = []string{"id", "image", "namespace", "pod", "container"}

// metricInput is what a metric's values are computed from.
type metricInput struct {
	st      *runtime.Stats
	spec    *specs.Spec
	started time.Time
	now     time.Time
}

// metricValue is one value of a metric, with its own labels' values.
type metricValue struct {
	labels []string
	value  uint64
}

// metricDef is a metric: its descriptor, its type and its values.
type metricDef struct {
	name, help string
	labels     []string // its own, after the base ones
	typ        cri.MetricType
	values     func(*metricInput) []metricValue
}

func (d *metricDef) descriptor() *cri.MetricDescriptor {
	return &cri.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: append(slices.Clone(baseLabelKeys), d.labels...)}
}

// one is a metric with one value and no labels of its own.
func one(f func(*metricInput) uint64) func(*metricInput) []metricValue {
	return func(in *metricInput) []metricValue { return []metricValue{{value: f(in)}} }
}

// fsMetric is a metric of the writable layer, none where the runtime does
// not read it.
func fsMetric(f func(*runtime.FilesystemStats) uint64) func(*metricInput) []metricValue {
	return func(in *metricInput) []metricValue {
		if in.st.Filesystem == nil {
			return nil
		}
		return []metricValue{{value: f(in.st.Filesystem)}}
	}
}

// blockMetric is a metric of each block device the container did I/O on.
func blockMetric(f func(runtime.BlockIOStats) uint64) func(*metricInput) []metricValue {
	return func(in *metricInput) []metricValue {
		var out []metricValue
		for _, b := range in.st.BlockIO {
			out = append(out, metricValue{labels: []string{blockDeviceName(b.Major, b.Minor)}, value: f(b)})
		}
		return out
	}
}

// resources are the spec's limits, never nil.
func resources(spec *specs.Spec) *specs.LinuxResources {
	if spec == nil || spec.Linux == nil || spec.Linux.Resources == nil {
		return &specs.LinuxResources{}
	}
	return spec.Linux.Resources
}

const nanos = uint64(time.Second)

// containerMetricDefs are the metrics of each running container.
var containerMetricDefs = []*metricDef{
	{name: "container_cpu_user_seconds_total", help: "Cumulative user CPU time consumed in seconds.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.CPU.UserNanos / nanos })},
	{name: "container_cpu_system_seconds_total", help: "Cumulative system CPU time consumed in seconds.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.CPU.SystemNanos / nanos })},
	{name: "container_cpu_usage_seconds_total", help: "Cumulative CPU time consumed in seconds.", labels: []string{"cpu"}, typ: cri.MetricType_COUNTER,
		values: func(in *metricInput) []metricValue {
			return []metricValue{{labels: []string{"total"}, value: in.st.CPUUsageNanos / nanos}}
		}},
	{name: "container_cpu_cfs_periods_total", help: "Number of elapsed enforcement period intervals.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.CPU.Periods })},
	{name: "container_cpu_cfs_throttled_periods_total", help: "Number of throttled period intervals.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.CPU.ThrottledPeriods })},
	{name: "container_cpu_cfs_throttled_seconds_total", help: "Total time duration the container has been throttled.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.CPU.ThrottledNanos / nanos })},

	{name: "container_memory_cache", help: "Number of bytes of page cache memory.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.Cache })},
	{name: "container_memory_rss", help: "Size of RSS in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.RSS })},
	{name: "container_memory_kernel_usage", help: "Size of kernel memory allocated in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.Kernel })},
	{name: "container_memory_mapped_file", help: "Size of memory mapped files in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.MappedFile })},
	{name: "container_memory_swap", help: "Container swap usage in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.Swap })},
	{name: "container_memory_failcnt", help: "Number of memory usage hits limits.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.Failcnt })},
	{name: "container_memory_usage_bytes", help: "Current memory usage in bytes, including all memory regardless of when it was accessed.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.MemoryUsage })},
	{name: "container_memory_max_usage_bytes", help: "Maximum memory usage recorded in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.MaxUsage })},
	{name: "container_memory_working_set_bytes", help: "Current working set in bytes.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.WorkingSet })},
	{name: "container_memory_failures_total", help: "Cumulative count of memory allocation failures (page faults).", labels: []string{"failure_type", "scope"}, typ: cri.MetricType_COUNTER,
		values: func(in *metricInput) []metricValue {
			return []metricValue{
				{labels: []string{"pgfault", "container"}, value: in.st.Memory.PageFaults},
				{labels: []string{"pgmajfault", "container"}, value: in.st.Memory.MajorPageFaults},
			}
		}},
	{name: "container_oom_events_total", help: "Count of out of memory events observed for the container.", typ: cri.MetricType_COUNTER,
		values: one(func(in *metricInput) uint64 { return in.st.Memory.OOMKills })},

	{name: "container_fs_inodes_free", help: "Number of available inodes.", typ: cri.MetricType_GAUGE,
		values: fsMetric(func(f *runtime.FilesystemStats) uint64 { return f.InodesFree })},
	{name: "container_fs_inodes_total", help: "Number of inodes.", typ: cri.MetricType_GAUGE,
		values: fsMetric(func(f *runtime.FilesystemStats) uint64 { return f.Inodes })},
	{name: "container_fs_limit_bytes", help: "Number of bytes that can be consumed by the container on this filesystem.", typ: cri.MetricType_GAUGE,
		values: fsMetric(func(f *runtime.FilesystemStats) uint64 { return f.Capacity })},
	{name: "container_fs_usage_bytes", help: "Number of bytes that are consumed by the container on this filesystem.", typ: cri.MetricType_GAUGE,
		values: fsMetric(func(f *runtime.FilesystemStats) uint64 { return f.UsedBytes })},

	{name: "container_fs_reads_bytes_total", help: "Cumulative count of bytes read.", labels: []string{"device"}, typ: cri.MetricType_COUNTER,
		values: blockMetric(func(b runtime.BlockIOStats) uint64 { return b.ReadBytes })},
	{name: "container_fs_reads_total", help: "Cumulative count of reads completed.", labels: []string{"device"}, typ: cri.MetricType_COUNTER,
		values: blockMetric(func(b runtime.BlockIOStats) uint64 { return b.Reads })},
	{name: "container_fs_writes_bytes_total", help: "Cumulative count of bytes written.", labels: []string{"device"}, typ: cri.MetricType_COUNTER,
		values: blockMetric(func(b runtime.BlockIOStats) uint64 { return b.WriteBytes })},
	{name: "container_fs_writes_total", help: "Cumulative count of writes completed.", labels: []string{"device"}, typ: cri.MetricType_COUNTER,
		values: blockMetric(func(b runtime.BlockIOStats) uint64 { return b.Writes })},
	{name: "container_blkio_device_usage_total", help: "Blkio device bytes usage.", labels: []string{"device", "major", "minor", "operation"}, typ: cri.MetricType_COUNTER,
		values: func(in *metricInput) []metricValue {
			var out []metricValue
			for _, b := range in.st.BlockIO {
				dev, maj, min := blockDeviceName(b.Major, b.Minor), fmt.Sprint(b.Major), fmt.Sprint(b.Minor)
				out = append(out,
					metricValue{labels: []string{dev, maj, min, "Read"}, value: b.ReadBytes},
					metricValue{labels: []string{dev, maj, min, "Write"}, value: b.WriteBytes})
			}
			return out
		}},

	{name: "container_processes", help: "Number of processes running inside the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Pids })},
	{name: "container_threads", help: "Number of threads running inside the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Process.Threads })},
	{name: "container_threads_max", help: "Maximum number of threads allowed inside the container, infinity if value is zero.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.PidsLimit })},
	{name: "container_file_descriptors", help: "Number of open file descriptors for the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Process.FileDescriptors })},
	{name: "container_sockets", help: "Number of open sockets for the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return in.st.Process.Sockets })},

	{name: "container_spec_cpu_period", help: "CPU period of the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 {
			if c := resources(in.spec).CPU; c != nil && c.Period != nil {
				return *c.Period
			}
			return 0
		})},
	{name: "container_spec_cpu_quota", help: "CPU quota of the container.", typ: cri.MetricType_GAUGE,
		values: func(in *metricInput) []metricValue {
			// Only a quota set, as cAdvisor gives it.
			if c := resources(in.spec).CPU; c != nil && c.Quota != nil && *c.Quota > 0 {
				return []metricValue{{value: uint64(*c.Quota)}}
			}
			return nil
		}},
	{name: "container_spec_cpu_shares", help: "CPU share of the container.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 {
			if c := resources(in.spec).CPU; c != nil && c.Shares != nil {
				return *c.Shares
			}
			return 0
		})},
	{name: "container_spec_memory_limit_bytes", help: "Memory limit for the container (0: none).", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 {
			if m := resources(in.spec).Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
				return uint64(*m.Limit)
			}
			return 0
		})},
	{name: "container_spec_memory_swap_limit_bytes", help: "Memory and swap limit for the container (0: none).", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 {
			if m := resources(in.spec).Memory; m != nil && m.Swap != nil && *m.Swap > 0 {
				return uint64(*m.Swap)
			}
			return 0
		})},
	{name: "container_start_time_seconds", help: "Start time of the container since unix epoch in seconds.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return uint64(max(in.started.Unix(), 0)) })},
	{name: "container_last_seen", help: "Last time a container was seen by the exporter.", typ: cri.MetricType_GAUGE,
		values: one(func(in *metricInput) uint64 { return uint64(in.now.Unix()) })},
}

// netMetric is a metric of each interface of the pod's network namespace
// but its loopback (as cAdvisor leaves it out).
func netMetric(f func(runtime.NetworkStats) uint64) func(*metricInput) []metricValue {
	return func(in *metricInput) []metricValue {
		var out []metricValue
		for _, n := range in.st.Network {
			if n.Name != "lo" {
				out = append(out, metricValue{labels: []string{n.Name}, value: f(n)})
			}
		}
		return out
	}
}

// podMetricDefs are the metrics of each pod: its network's.
var podMetricDefs = []*metricDef{
	{name: "container_network_receive_bytes_total", help: "Cumulative count of bytes received.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.RxBytes })},
	{name: "container_network_receive_packets_total", help: "Cumulative count of packets received.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.RxPackets })},
	{name: "container_network_receive_packets_dropped_total", help: "Cumulative count of packets dropped while receiving.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.RxDropped })},
	{name: "container_network_receive_errors_total", help: "Cumulative count of errors encountered while receiving.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.RxErrors })},
	{name: "container_network_transmit_bytes_total", help: "Cumulative count of bytes transmitted.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.TxBytes })},
	{name: "container_network_transmit_packets_total", help: "Cumulative count of packets transmitted.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.TxPackets })},
	{name: "container_network_transmit_packets_dropped_total", help: "Cumulative count of packets dropped while transmitting.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.TxDropped })},
	{name: "container_network_transmit_errors_total", help: "Cumulative count of errors encountered while transmitting.", labels: []string{"interface"}, typ: cri.MetricType_COUNTER,
		values: netMetric(func(n runtime.NetworkStats) uint64 { return n.TxErrors })},
}

// blockDeviceName names a block device as cAdvisor does (/dev/<name>),
// from sysfs; by its numbers where sysfs does not know it.
func blockDeviceName(major, minor uint64) string {
	if l, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)); err == nil {
		return "/dev/" + filepath.Base(l)
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// computeMetrics gives defs' values for in, each with the base labels.
func computeMetrics(defs []*metricDef, base []string, in *metricInput) []*cri.Metric {
	var out []*cri.Metric
	for _, d := range defs {
		for _, v := range d.values(in) {
			out = append(out, &cri.Metric{
				Name: d.name, MetricType: d.typ, Value: &cri.UInt64Value{Value: v.value},
				LabelValues: append(slices.Clone(base), v.labels...),
			})
		}
	}
	return out
}

// ListMetricDescriptors describes the metrics ListPodSandboxMetrics gives.
func (s *RuntimeService) ListMetricDescriptors(context.Context, *cri.ListMetricDescriptorsRequest) (*cri.ListMetricDescriptorsResponse, error) {
	resp := &cri.ListMetricDescriptorsResponse{}
	for _, defs := range [][]*metricDef{containerMetricDefs, podMetricDefs} {
		for _, d := range defs {
			resp.Descriptors = append(resp.Descriptors, d.descriptor())
		}
	}
	return resp, nil
}

// ListPodSandboxMetrics gives each pod's metrics: its network's (from its
// infra container) unless it is on the host's network or stopped, and
// each running container's.
func (s *RuntimeService) ListPodSandboxMetrics(ctx context.Context, _ *cri.ListPodSandboxMetricsRequest) (*cri.ListPodSandboxMetricsResponse, error) {
	resp := &cri.ListPodSandboxMetricsResponse{}
	for _, sb := range s.state.listSandboxes() {
		resp.PodMetrics = append(resp.PodMetrics, s.podMetrics(ctx, sb))
	}
	return resp, nil
}

func (s *RuntimeService) podMetrics(ctx context.Context, sb *sandbox) *cri.PodSandboxMetrics {
	md := sb.cfg.GetMetadata()
	out := &cri.PodSandboxMetrics{PodSandboxId: sb.ID}
	now := time.Now()
	if st := s.podNetworkStats(ctx, sb); st != nil {
		out.Metrics = computeMetrics(podMetricDefs, []string{sb.ID, "", md.GetNamespace(), md.GetName(), "POD"}, &metricInput{st: st, now: now})
	}
	for _, c := range s.podContainers(sb.ID) {
		st, info, err := s.runningStats(ctx, c)
		if err != nil || st == nil {
			continue // not running, or removed meanwhile
		}
		base := []string{c.ID, c.cfg.GetImage().GetImage(), md.GetNamespace(), md.GetName(), c.cfg.GetMetadata().GetName()}
		in := &metricInput{st: st, spec: info.Spec, started: c.started(), now: now}
		out.ContainerMetrics = append(out.ContainerMetrics, &cri.ContainerMetrics{ContainerId: c.ID, Metrics: computeMetrics(containerMetricDefs, base, in)})
	}
	return out
}

// podNetworkStats reads the pod's infra container, whose network
// namespace its containers share; nil for a pod on the host's network (its
// interfaces are the host's), or stopped.
func (s *RuntimeService) podNetworkStats(ctx context.Context, sb *sandbox) *runtime.Stats {
	if sb.stopped() || sb.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == cri.NamespaceMode_NODE {
		return nil
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return nil
	}
	infra, err := rt.Get(ctx, sb.ID)
	if err != nil {
		return nil
	}
	st, err := infra.Stats(ctx)
	if err != nil {
		return nil
	}
	return st
}
