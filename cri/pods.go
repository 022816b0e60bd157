package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/cri/network"
	"github.com/berthrun/berth/runtime"
)

// Labels berth-cri puts on the runtime's containers, so that what it made
// can be told from what others made on the same runtime.
const (
	labelKind    = "io.berth.cri.kind" // "sandbox" or "container"
	labelSandbox = "io.berth.cri.sandbox"
)

// RunPodSandbox creates a pod: its infra container, created and never
// started, whose init holds the pod's namespaces (and is PID 1 of its
// PID namespace), then its network.
func (s *RuntimeService) RunPodSandbox(ctx context.Context, req *cri.RunPodSandboxRequest) (*cri.RunPodSandboxResponse, error) {
	id, err := s.runPodSandbox(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return &cri.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (s *RuntimeService) runPodSandbox(ctx context.Context, req *cri.RunPodSandboxRequest) (_ string, err error) {
	cfg := req.GetConfig()
	m := cfg.GetMetadata()
	if m.GetName() == "" || m.GetNamespace() == "" || m.GetUid() == "" {
		return "", fmt.Errorf("pod sandbox config: metadata needs a name, a namespace and a UID: %w", errdefs.ErrInvalidArgument)
	}
	rt, err := s.handler(req.GetRuntimeHandler())
	if err != nil {
		return "", err
	}
	sb := &sandbox{ID: newID(), Handler: req.GetRuntimeHandler(), Created: time.Now().UTC(), cfg: cfg}
	name := sandboxName(m)
	if err := s.state.reserve(name, sb.ID); err != nil {
		return "", fmt.Errorf("pod %s/%s: %w", m.GetNamespace(), m.GetName(), err)
	}
	defer func() {
		if err != nil {
			s.state.release(name, sb.ID)
		}
	}()
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if err := checkNamespaceModes(ns); err != nil {
		return "", err
	}
	dir := s.podDir(sb.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := writePodFiles(dir, cfg); err != nil {
		return "", fmt.Errorf("pod %s: %w", sb.ID, err)
	}
	spec := s.infraSpec(cfg)
	userns, err := podUserNamespace(ns)
	if err != nil {
		return "", err
	}
	infra, err := rt.Create(ctx, sb.ID, &runtime.Config{
		Spec:          spec,
		UserNamespace: userns,
		Labels:        map[string]string{labelKind: "sandbox"},
	})
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = infra.Delete(context.WithoutCancel(ctx), runtime.DeleteOptions{Force: true})
		}
	}()
	if ns.GetNetwork() != cri.NamespaceMode_NODE {
		if s.net == nil {
			return "", fmt.Errorf("pod %s: no CNI network is configured for a pod network: %w", sb.ID, errdefs.ErrUnavailable)
		}
		// The network pins the namespace itself (Setup), so its
		// teardown never depends on the init's PID.
		netns, err := infra.NamespacePath(ctx, specs.NetworkNamespace)
		if err != nil {
			return "", err
		}
		pod := s.networkPod(sb)
		pod.NetNS = netns
		res, err := s.net.Setup(ctx, pod)
		if err != nil {
			return "", err
		}
		sb.NetNS = netns
		for _, ip := range res.IPs {
			sb.IPs = append(sb.IPs, ip.String())
		}
		defer func() {
			if err != nil {
				_ = s.net.Teardown(context.WithoutCancel(ctx), pod)
			}
		}()
	}
	if err := s.state.saveSandbox(sb); err != nil {
		return "", err
	}
	s.state.addSandbox(sb)
	s.events.publish(sb.ID, sb.ID, cri.ContainerEventType_CONTAINER_CREATED_EVENT)
	s.events.publish(sb.ID, sb.ID, cri.ContainerEventType_CONTAINER_STARTED_EVENT)
	return sb.ID, nil
}

// checkNamespaceModes refuses the modes a pod cannot have.
func checkNamespaceModes(ns *cri.NamespaceOption) error {
	for what, mode := range map[string]cri.NamespaceMode{"network": ns.GetNetwork(), "ipc": ns.GetIpc()} {
		if mode != cri.NamespaceMode_POD && mode != cri.NamespaceMode_NODE {
			return fmt.Errorf("pod sandbox config: %s namespace mode %s: only POD or NODE: %w", what, mode, errdefs.ErrInvalidArgument)
		}
	}
	if ns.GetPid() == cri.NamespaceMode_TARGET {
		return fmt.Errorf("pod sandbox config: pid namespace mode TARGET is for containers: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// podUserNamespace says whether the pod has a user namespace of its own:
// its userns options ask for mode POD (absent options, or NODE, keep the
// host's). The kubelet sends the mapping it chose, one range from the
// container's 0; it must have that shape, but the range the pod gets is
// one of the runtime's ID pool, which alone knows what no other
// container of the host holds.
func podUserNamespace(ns *cri.NamespaceOption) (bool, error) {
	u := ns.GetUsernsOptions()
	if u == nil {
		return false, nil
	}
	switch u.GetMode() {
	case cri.NamespaceMode_NODE:
		return false, nil
	case cri.NamespaceMode_POD:
		for what, m := range map[string][]*cri.IDMapping{"uid": u.GetUids(), "gid": u.GetGids()} {
			if len(m) > 1 || (len(m) == 1 && m[0].GetContainerId() != 0) {
				return false, fmt.Errorf("pod sandbox config: %s mappings: one range from the container's ID 0 only: %w", what, errdefs.ErrInvalidArgument)
			}
		}
		return true, nil
	}
	return false, fmt.Errorf("pod sandbox config: user namespace mode %s: only POD or NODE: %w", u.GetMode(), errdefs.ErrInvalidArgument)
}

// networkPod describes sb to the network.
func (s *RuntimeService) networkPod(sb *sandbox) network.Pod {
	m := sb.cfg.GetMetadata()
	pod := network.Pod{ID: sb.ID, Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUid(), NetNS: sb.NetNS}
	for _, pm := range sb.cfg.GetPortMappings() {
		proto := strings.ToLower(pm.GetProtocol().String())
		pod.PortMappings = append(pod.PortMappings, network.PortMapping{
			Protocol: proto, ContainerPort: pm.GetContainerPort(), HostPort: pm.GetHostPort(), HostIP: pm.GetHostIp(),
		})
	}
	return pod
}

// infraSpec is the spec of a pod's infra container: the pod's namespaces
// (none of the host's unless asked), its hostname and sysctls, a root
// filesystem with nothing in it.
func (s *RuntimeService) infraSpec(cfg *cri.PodSandboxConfig) *specs.Spec {
	spec := runtime.DefaultSpec(s.infraRootfs(), "/pause")
	spec.Root.Readonly = true
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	drop := map[specs.LinuxNamespaceType]bool{}
	if ns.GetNetwork() == cri.NamespaceMode_NODE {
		drop[specs.NetworkNamespace] = true
		drop[specs.UTSNamespace] = true
	}
	if ns.GetIpc() == cri.NamespaceMode_NODE {
		drop[specs.IPCNamespace] = true
	}
	if ns.GetPid() == cri.NamespaceMode_NODE {
		drop[specs.PIDNamespace] = true
	}
	var kept []specs.LinuxNamespace
	for _, n := range spec.Linux.Namespaces {
		if !drop[n.Type] {
			kept = append(kept, n)
		}
	}
	spec.Linux.Namespaces = kept
	if drop[specs.UTSNamespace] {
		spec.Hostname = ""
	} else {
		spec.Hostname = podHostname(cfg)
	}
	if len(cfg.GetLinux().GetSysctls()) > 0 {
		spec.Linux.Sysctl = map[string]string{}
		for k, v := range cfg.GetLinux().GetSysctls() {
			spec.Linux.Sysctl[k] = v
		}
	}
	// The infra runs nothing: no capability is needed.
	spec.Process.Capabilities = &specs.LinuxCapabilities{}
	return spec
}

// podHostname is the pod's hostname: its config's, or the host's (as
// containerd does; the kubelet always sets one).
func podHostname(cfg *cri.PodSandboxConfig) string {
	if h := cfg.GetHostname(); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// writePodFiles writes the files a pod's containers mount: its hostname,
// /etc/hosts and resolv.conf (the pod's DNS config, or the host's).
func writePodFiles(dir string, cfg *cri.PodSandboxConfig) error {
	host := podHostname(cfg)
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == cri.NamespaceMode_NODE {
		host, _ = os.Hostname()
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(host+"\n"), 0o644); err != nil {
		return err
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	var resolv []byte
	if dns := cfg.GetDnsConfig(); dns != nil && (len(dns.Servers) > 0 || len(dns.Searches) > 0 || len(dns.Options) > 0) {
		var b strings.Builder
		for _, sv := range dns.Servers {
			fmt.Fprintf(&b, "nameserver %s\n", sv)
		}
		if len(dns.Searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
		}
		if len(dns.Options) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
		}
		resolv = []byte(b.String())
	} else {
		data, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		resolv = data
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644)
}

// StopPodSandbox stops the pod's containers, tears its network down and
// ends its infra. A pod that is not there is stopped already.
func (s *RuntimeService) StopPodSandbox(ctx context.Context, req *cri.StopPodSandboxRequest) (*cri.StopPodSandboxResponse, error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &cri.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if err := s.stopPod(ctx, sb); err != nil {
		return nil, grpcError(err)
	}
	return &cri.StopPodSandboxResponse{}, nil
}

func (s *RuntimeService) stopPod(ctx context.Context, sb *sandbox) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for _, c := range s.podContainers(sb.ID) {
		if err := s.stopContainer(ctx, c, 0); err != nil {
			return err
		}
	}
	if sb.stopped() {
		return nil
	}
	if sb.NetNS != "" && s.net != nil {
		if err := s.net.Teardown(ctx, s.networkPod(sb)); err != nil {
			return fmt.Errorf("pod %s: network: %w", sb.ID, err)
		}
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return err
	}
	if infra, err := rt.Get(ctx, sb.ID); err == nil {
		if err := infra.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		if _, err := infra.Wait(ctx); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	sb.setStopped()
	if err := s.state.saveSandbox(sb); err != nil {
		return err
	}
	s.events.publish(sb.ID, sb.ID, cri.ContainerEventType_CONTAINER_STOPPED_EVENT)
	return nil
}

// RemovePodSandbox removes the pod, its containers first, stopping what
// runs. A pod that is not there is removed already.
func (s *RuntimeService) RemovePodSandbox(ctx context.Context, req *cri.RemovePodSandboxRequest) (*cri.RemovePodSandboxResponse, error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &cri.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if err := s.stopPod(ctx, sb); err != nil {
		return nil, grpcError(err)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for _, c := range s.podContainers(sb.ID) {
		if err := s.removeContainer(ctx, c); err != nil {
			return nil, grpcError(err)
		}
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return nil, grpcError(err)
	}
	if infra, err := rt.Get(ctx, sb.ID); err == nil {
		if err := infra.Delete(ctx, runtime.DeleteOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
			return nil, grpcError(err)
		}
	} else if !errdefs.IsNotFound(err) {
		return nil, grpcError(err)
	}
	if err := os.RemoveAll(s.podDir(sb.ID)); err != nil {
		return nil, grpcError(err)
	}
	if err := s.state.removeSandbox(sb); err != nil {
		return nil, grpcError(err)
	}
	s.events.publish(sb.ID, sb.ID, cri.ContainerEventType_CONTAINER_DELETED_EVENT)
	return &cri.RemovePodSandboxResponse{}, nil
}

// podContainers are the containers of pod id.
func (s *RuntimeService) podContainers(id string) []*container {
	var out []*container
	for _, c := range s.state.listContainers() {
		if c.SandboxID == id {
			out = append(out, c)
		}
	}
	return out
}

// podState is READY while the pod's infra holds its namespaces.
func (s *RuntimeService) podState(ctx context.Context, sb *sandbox) cri.PodSandboxState {
	if sb.stopped() {
		return cri.PodSandboxState_SANDBOX_NOTREADY
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return cri.PodSandboxState_SANDBOX_NOTREADY
	}
	c, err := rt.Get(ctx, sb.ID)
	if err != nil {
		return cri.PodSandboxState_SANDBOX_NOTREADY
	}
	st, err := c.State(ctx)
	if err != nil || (st != runtime.StatusCreated && st != runtime.StatusRunning) {
		return cri.PodSandboxState_SANDBOX_NOTREADY
	}
	return cri.PodSandboxState_SANDBOX_READY
}

// PodSandboxStatus describes a pod.
func (s *RuntimeService) PodSandboxStatus(ctx context.Context, req *cri.PodSandboxStatusRequest) (*cri.PodSandboxStatusResponse, error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, grpcError(err)
	}
	st := s.sandboxStatus(ctx, sb)
	resp := &cri.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": fmt.Sprintf(`{"handler":%q,"netns":%q}`, sb.Handler, sb.NetNS)}
	}
	return resp, nil
}

func (s *RuntimeService) sandboxStatus(ctx context.Context, sb *sandbox) *cri.PodSandboxStatus {
	cfg := sb.cfg
	st := &cri.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       cfg.GetMetadata(),
		State:          s.podState(ctx, sb),
		CreatedAt:      sb.Created.UnixNano(),
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: sb.Handler,
		Linux: &cri.LinuxPodSandboxStatus{Namespaces: &cri.Namespace{
			Options: cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(),
		}},
	}
	if len(sb.IPs) > 0 {
		st.Network = &cri.PodSandboxNetworkStatus{Ip: sb.IPs[0]}
		for _, ip := range sb.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &cri.PodIP{Ip: ip})
		}
	}
	return st
}

// filterSandboxes are the pods whose ID starts with id and whose labels
// hold selector's.
func (s *RuntimeService) filterSandboxes(id string, selector map[string]string) []*sandbox {
	var out []*sandbox
	for _, sb := range s.state.listSandboxes() {
		if strings.HasPrefix(sb.ID, id) && matchLabels(selector, sb.cfg.GetLabels()) {
			out = append(out, sb)
		}
	}
	return out
}

// ListPodSandbox lists the pods that pass the filter.
func (s *RuntimeService) ListPodSandbox(ctx context.Context, req *cri.ListPodSandboxRequest) (*cri.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	resp := &cri.ListPodSandboxResponse{}
	for _, sb := range s.filterSandboxes(f.GetId(), f.GetLabelSelector()) {
		st := s.podState(ctx, sb)
		if f.GetState() != nil && f.GetState().GetState() != st {
			continue
		}
		resp.Items = append(resp.Items, &cri.PodSandbox{
			Id: sb.ID, Metadata: sb.cfg.GetMetadata(), State: st, CreatedAt: sb.Created.UnixNano(),
			Labels: sb.cfg.GetLabels(), Annotations: sb.cfg.GetAnnotations(), RuntimeHandler: sb.Handler,
		})
	}
	return resp, nil
}

// matchLabels reports whether labels hold every pair of selector.
func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
