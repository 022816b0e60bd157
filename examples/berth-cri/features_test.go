package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
)

// importImage imports busybox with a layer of entries on top into the
// store under root, tagged tag, and returns the image's ID.
func importImage(t *testing.T, root, tag string, entries ...imagetest.Entry) string {
	t.Helper()
	base, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{base, imagetest.Tar(entries...)}, "/bin/sh")
	im.Tags = []string{tag}
	store, err := image.Open(filepath.Join(root, "images"))
	require.NoError(t, err)
	res, err := store.ImportReader(context.Background(), bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	return res.Images[0].Config.String()
}

// runPod runs a pod of the given name, removed when the test ends.
func runPod(t *testing.T, s *server, name string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	ctx := context.Background()
	pcfg := podConfig(name)
	pcfg.LogDirectory = filepath.Join(s.root, "logs", name)
	require.NoError(t, os.MkdirAll(pcfg.LogDirectory, 0o755))
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	t.Cleanup(func() { s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}) })
	return run.PodSandboxId, pcfg
}

// startContainer creates and starts a container of cfg in the pod.
func startContainer(t *testing.T, s *server, pod string, pcfg *cri.PodSandboxConfig, cfg *cri.ContainerConfig) string {
	t.Helper()
	ctx := context.Background()
	cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: pcfg})
	require.NoError(t, err)
	_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
	require.NoError(t, err)
	return cr.ContainerId
}

// execOut runs cmd in the container and returns its output; it must
// succeed.
func execOut(t *testing.T, s *server, id string, cmd ...string) string {
	t.Helper()
	ex, err := s.rt.ExecSync(context.Background(), &cri.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	require.NoError(t, err)
	require.Zero(t, ex.ExitCode, "%v: %s %s", cmd, ex.Stdout, ex.Stderr)
	return string(ex.Stdout)
}

// The supplemental groups policy: Merge (the default) adds the groups the
// image's /etc/group gives the user, Strict only the primary group and
// those asked for; the container's status reports what its process got,
// which an exec gets too.
func TestSupplementalGroupsPolicy(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	importImage(t, root, "groups:test",
		imagetest.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
		imagetest.File("etc/group", "root:x:0:\napp:x:1000:\nimage-group:x:50000:app\n"))
	s := startServer(t, root)
	st, err := s.rt.Status(ctx, &cri.StatusRequest{})
	require.NoError(t, err)
	require.True(t, st.GetFeatures().GetSupplementalGroupsPolicy())
	pod, pcfg := runPod(t, s, "groups")

	for _, tc := range []struct {
		policy cri.SupplementalGroupsPolicy
		want   []int64
		id     string
	}{
		{cri.SupplementalGroupsPolicy_Merge, []int64{1000, 1234, 50000}, "1000 1234 50000\n"},
		{cri.SupplementalGroupsPolicy_Strict, []int64{1000, 1234}, "1000 1234\n"},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			cfg := containerConfig("c-"+tc.policy.String(), "sh", "-c", "id -G; exec sleep 1000")
			cfg.Image.Image = "groups:test"
			cfg.Linux.SecurityContext = &cri.LinuxContainerSecurityContext{
				RunAsUser: &cri.Int64Value{Value: 1000}, SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: tc.policy,
			}
			id := startContainer(t, s, pod, pcfg, cfg)
			cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
			require.NoError(t, err)
			u := cs.Status.GetUser().GetLinux()
			require.EqualValues(t, 1000, u.GetUid())
			require.EqualValues(t, 1000, u.GetGid())
			groups := slices.Clone(u.GetSupplementalGroups())
			slices.Sort(groups)
			require.Equal(t, tc.want, groups)
			// What the container's first process has, and an exec too.
			log := filepath.Join(pcfg.LogDirectory, cfg.LogPath)
			require.Eventually(t, func() bool {
				b, _ := os.ReadFile(log)
				return bytes.Contains(b, []byte(" stdout F "+tc.id))
			}, 30*time.Second, 100*time.Millisecond, "the first process's groups, %q in its log", tc.id)
			require.Equal(t, tc.id, execOut(t, s, id, "id", "-G"))
		})
	}
	cfg := containerConfig("bad-policy", "true")
	cfg.Image.Image = "groups:test"
	cfg.Linux.SecurityContext = &cri.LinuxContainerSecurityContext{SupplementalGroupsPolicy: 7}
	_, err = s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: pcfg})
	requireCode(t, codes.InvalidArgument, err)
}

// An image volume: the image (or a path of it) read-only at the mount,
// executable, reported in the container's status by the image's ID; the
// tenant's writes fail and never reach the store's tree. Refused ones (not
// read-only, an unknown image, a sub path out of the image or missing)
// leave nothing behind, holds on the store's trees included.
func TestImageVolume(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	dataID := importImage(t, root, "data:test",
		imagetest.Dir("data"), imagetest.File("data/hello", "from-image\n"),
		imagetest.File("etc/passwd", "image-passwd\n"),
		imagetest.Symlink("escape", "../../../../../etc"))
	s := startServer(t, root)
	pod, pcfg := runPod(t, s, "imgvol")

	refused := []struct {
		name  string
		mount *cri.Mount
		code  codes.Code
	}{
		{"writable", &cri.Mount{ContainerPath: "/mnt/img", Image: &cri.ImageSpec{Image: dataID}}, codes.InvalidArgument},
		{"unknown image", &cri.Mount{ContainerPath: "/mnt/img", Readonly: true, Image: &cri.ImageSpec{Image: "nosuch:image"}}, codes.NotFound},
		{"sub path out of the image", &cri.Mount{ContainerPath: "/mnt/img", Readonly: true, Image: &cri.ImageSpec{Image: dataID}, ImageSubPath: "../../etc"}, codes.InvalidArgument},
		{"sub path through a link out of the image", &cri.Mount{ContainerPath: "/mnt/img", Readonly: true, Image: &cri.ImageSpec{Image: dataID}, ImageSubPath: "escape/shadow"}, codes.NotFound},
		{"missing sub path", &cri.Mount{ContainerPath: "/mnt/img", Readonly: true, Image: &cri.ImageSpec{Image: dataID}, ImageSubPath: "not-existing"}, codes.NotFound},
		{"a host path too", &cri.Mount{ContainerPath: "/mnt/img", Readonly: true, HostPath: "/tmp", Image: &cri.ImageSpec{Image: dataID}}, codes.InvalidArgument},
	}
	for _, tc := range refused {
		cfg := containerConfig("refused", "sleep", "1000")
		cfg.Mounts = []*cri.Mount{tc.mount}
		_, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: pcfg})
		requireCode(t, tc.code, err)
		if tc.name == "unknown image" {
			require.ErrorContains(t, err, "nosuch:image")
		}
	}
	list, err := s.rt.ListContainers(ctx, &cri.ListContainersRequest{})
	require.NoError(t, err)
	require.Empty(t, list.Containers)

	cfg := containerConfig("vol", "sleep", "1000")
	cfg.Mounts = []*cri.Mount{
		{ContainerPath: "/mnt/img", Readonly: true, Image: &cri.ImageSpec{Image: dataID, UserSpecifiedImage: "data:test"}},
		{ContainerPath: "/mnt/sub", Readonly: true, Image: &cri.ImageSpec{Image: "data:test"}, ImageSubPath: "data"},
		// The link leads to the image's /etc/passwd, never the host's.
		{ContainerPath: "/mnt/passwd", Readonly: true, Image: &cri.ImageSpec{Image: dataID}, ImageSubPath: "escape/passwd"},
	}
	id := startContainer(t, s, pod, pcfg, cfg)
	require.Equal(t, "from-image\nfrom-image\nimage-passwd\n", execOut(t, s, id, "cat", "/mnt/img/data/hello", "/mnt/sub/hello", "/mnt/passwd"))
	require.Equal(t, "ok\n", execOut(t, s, id, "/mnt/img/bin/sh", "-c", "echo ok"), "the image's programs run")
	for _, w := range [][]string{
		{"touch", "/mnt/img/new"},
		{"sh", "-c", "echo tenant > /mnt/img/data/hello"},
		{"mkdir", "/mnt/sub/dir"},
		{"mount", "-o", "remount,rw,bind", "/mnt/img"},
	} {
		ex, err := s.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: w, Timeout: 10})
		require.NoError(t, err)
		require.NotZero(t, ex.ExitCode, "%v succeeded on the image volume", w)
	}
	cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	require.NoError(t, err)
	var refs []string
	for _, m := range cs.Status.Mounts {
		refs = append(refs, m.GetImage().GetImageRef())
	}
	require.Equal(t, []string{dataID, dataID, dataID}, refs, "each image volume's image ID in the status")

	trees := filepath.Join(root, "images", "rootfs")
	b, err := os.ReadFile(filepath.Join(trees, mustDigest(t, root, "data:test"), "data", "hello"))
	require.NoError(t, err)
	require.Equal(t, "from-image\n", string(b), "the store's tree is unchanged")

	// With the pod gone, the image goes, and its tree: no refused create
	// above kept a hold on it.
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, id))
	_, err = s.im.RemoveImage(ctx, &cri.RemoveImageRequest{Image: &cri.ImageSpec{Image: "data:test"}})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(trees, mustDigest(t, root, "busybox:test")))
	require.NoError(t, err, "busybox's tree stays with its image")
	ents, err := os.ReadDir(trees)
	require.NoError(t, err)
	for _, e := range ents {
		if e.IsDir() {
			require.Equal(t, mustDigest(t, root, "busybox:test"), e.Name(), "a tree outlived its image and its containers")
		}
	}
}

// mustDigest is the encoded manifest digest of the image ref names.
func mustDigest(t *testing.T, root, ref string) string {
	t.Helper()
	store, err := image.Open(filepath.Join(root, "images"))
	require.NoError(t, err)
	im, err := store.Get(context.Background(), ref)
	require.NoError(t, err)
	return im.Digest.Encoded()
}

// The pod sandbox metrics: cAdvisor's, described with their labels, each
// running container's from its own readings (what it wrote, its limits,
// its processes), the pod's network from its namespace; a container that
// exited, and a pod removed, have none.
func TestPodSandboxMetrics(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	descs, err := s.rt.ListMetricDescriptors(ctx, &cri.ListMetricDescriptorsRequest{})
	require.NoError(t, err)
	keys := map[string][]string{}
	for _, d := range descs.Descriptors {
		require.NotEmpty(t, d.Help, d.Name)
		require.Equal(t, []string{"id", "image", "namespace", "pod", "container"}, d.LabelKeys[:5], d.Name)
		keys[d.Name] = d.LabelKeys
	}
	pod, pcfg := runPod(t, s, "metrics")
	cfg := containerConfig("busy", "sh", "-c", "dd if=/dev/zero of=/written bs=1M count=3 2>/dev/null; exec sleep 1000")
	limit := int64(64 << 20)
	cfg.Linux.Resources = &cri.LinuxContainerResources{MemoryLimitInBytes: limit, CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 512}
	id := startContainer(t, s, pod, pcfg, cfg)
	exited := startContainer(t, s, pod, pcfg, containerConfig("exited", "true"))
	require.Eventually(t, func() bool {
		cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: exited})
		return err == nil && cs.Status.State == cri.ContainerState_CONTAINER_EXITED
	}, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, "", execOut(t, s, id, "sh", "-c", "while [ ! -s /written ] || [ $(wc -c </written) -lt 3145728 ]; do sleep 0.1; done; ping -c 1 -W 5 10.97.0.1 >/dev/null"))

	resp, err := s.rt.ListPodSandboxMetrics(ctx, &cri.ListPodSandboxMetricsRequest{})
	require.NoError(t, err)
	var pm *cri.PodSandboxMetrics
	for _, m := range resp.PodMetrics {
		if m.PodSandboxId == pod {
			pm = m
		}
	}
	require.NotNil(t, pm)
	values := map[string]map[string]uint64{} // name, then own labels joined
	check := func(m *cri.Metric, want []string) {
		t.Helper()
		require.Contains(t, keys, m.Name, "a metric without a descriptor")
		require.Len(t, m.LabelValues, len(keys[m.Name]), m.Name)
		require.Equal(t, want, m.LabelValues[:5], m.Name)
		if values[m.Name] == nil {
			values[m.Name] = map[string]uint64{}
		}
		values[m.Name][fmt.Sprint(m.LabelValues[5:])] = m.Value.GetValue()
	}
	for _, m := range pm.Metrics {
		check(m, []string{pod, "", "test", "metrics", "POD"})
	}
	require.Len(t, pm.ContainerMetrics, 1, "the exited container has none")
	require.Equal(t, id, pm.ContainerMetrics[0].ContainerId)
	for _, m := range pm.ContainerMetrics[0].Metrics {
		check(m, []string{id, "busybox:test", "test", "metrics", "busy"})
	}
	for name := range keys {
		switch name {
		case "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_writes_bytes_total", "container_fs_writes_total", "container_blkio_device_usage_total":
			continue // only where the host's disk counts a cgroup's I/O
		}
		require.Contains(t, values, name, "a described metric has no value")
	}
	require.GreaterOrEqual(t, values["container_fs_usage_bytes"]["[]"], uint64(3<<20), "the file written")
	require.Positive(t, values["container_fs_limit_bytes"]["[]"])
	require.EqualValues(t, limit, values["container_spec_memory_limit_bytes"]["[]"])
	require.EqualValues(t, 100000, values["container_spec_cpu_period"]["[]"])
	require.EqualValues(t, 20000, values["container_spec_cpu_quota"]["[]"])
	require.EqualValues(t, 512, values["container_spec_cpu_shares"]["[]"])
	require.EqualValues(t, 1, values["container_processes"]["[]"], "sleep")
	require.Positive(t, values["container_memory_usage_bytes"]["[]"])
	require.Positive(t, values["container_file_descriptors"]["[]"])
	cs, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	require.NoError(t, err)
	require.EqualValues(t, cs.Status.StartedAt/int64(time.Second), values["container_start_time_seconds"]["[]"])
	require.Positive(t, values["container_network_transmit_packets_total"]["[eth0]"], "the ping went out of the pod's eth0")
	require.NotContains(t, values["container_network_receive_bytes_total"], "[lo]")

	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	resp, err = s.rt.ListPodSandboxMetrics(ctx, &cri.ListPodSandboxMetricsRequest{})
	require.NoError(t, err)
	require.Empty(t, resp.PodMetrics)
}
