package cri

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/cri/network"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/runtime"
)

// RuntimeOptions configure a RuntimeService.
type RuntimeOptions struct {
	// Handlers are the runtimes a pod may choose with its RuntimeClass
	// handler; "" is the default handler. Each must have Images as its
	// image store.
	Handlers map[string]*runtime.Runtime
	// Images is the store containers' images come from (the image
	// service's).
	Images *image.Store
	// Network sets up pods' networks; nil serves only pods on the host's
	// network, and Status says the network is not ready.
	Network *network.Manager
	// StateDir keeps the server's records of pods and containers, so a
	// restarted server serves them again.
	StateDir string
	// StreamAddr is the loopback address (host:port) of the streaming
	// server, where the URLs that Exec, Attach and PortForward return
	// lead; "" is DefaultStreamAddr. A non-loopback address is refused:
	// the server has neither authentication nor TLS.
	StreamAddr string
}

// RuntimeService is the CRI runtime service: pods as an infra container
// that holds their namespaces, containers that join them, over
// runtime.Runtime.
type RuntimeService struct {
	cri.UnimplementedRuntimeServiceServer
	handlers map[string]*runtime.Runtime
	images   *image.Store
	net      *network.Manager
	state    *state
	dir      string
	events   *eventHub
	stream   *streamServer
}

// NewRuntimeService serves pods and containers on the handlers of opts.
func NewRuntimeService(opts RuntimeOptions) (*RuntimeService, error) {
	if len(opts.Handlers) == 0 || opts.Handlers[""] == nil {
		return nil, fmt.Errorf("cri: no default runtime handler: %w", errdefs.ErrInvalidArgument)
	}
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("cri: state directory %q is not absolute: %w", opts.StateDir, errdefs.ErrInvalidArgument)
	}
	st, err := openState(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("cri: state: %w", err)
	}
	s := &RuntimeService{handlers: opts.Handlers, images: opts.Images, net: opts.Network, state: st, dir: opts.StateDir}
	if err := s.makeInfraRootfs(); err != nil {
		return nil, err
	}
	s.events = newEventHub(s)
	if err := s.reconcile(context.Background()); err != nil {
		s.events.close()
		return nil, err
	}
	if s.stream, err = newStreamServer(opts.StreamAddr, streamRuntime{s}); err != nil {
		s.events.close()
		return nil, err
	}
	return s, nil
}

// StreamAddr is the address the streaming server listens on.
func (s *RuntimeService) StreamAddr() net.Addr { return s.stream.addr() }

// reconcile removes what a server that died half-way through a create
// left: runtime containers it labelled but never recorded, and their
// networks.
func (s *RuntimeService) reconcile(ctx context.Context) error {
	seen := map[*runtime.Runtime]bool{}
	for _, rt := range s.handlers {
		if seen[rt] {
			continue
		}
		seen[rt] = true
		list, err := rt.List(ctx)
		if err != nil {
			return fmt.Errorf("cri: list containers: %w", err)
		}
		// Containers before pods: a pod's infra goes after those that
		// joined it.
		sort.SliceStable(list, func(i, j int) bool {
			return list[i].Labels[labelKind] == "container" && list[j].Labels[labelKind] != "container"
		})
		for _, info := range list {
			kind := info.Labels[labelKind]
			if kind == "" {
				continue // not the server's
			}
			if _, err := s.state.sandbox(info.ID); err == nil && kind == "sandbox" {
				continue
			}
			if _, err := s.state.container(info.ID); err == nil && kind == "container" {
				continue
			}
			if kind == "sandbox" && s.net != nil {
				if err := s.net.Teardown(ctx, network.Pod{ID: info.ID}); err != nil {
					return fmt.Errorf("cri: network of unrecorded pod %s: %w", info.ID, err)
				}
			}
			if c, err := rt.Get(ctx, info.ID); err == nil {
				if err := c.Delete(ctx, runtime.DeleteOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
					return fmt.Errorf("cri: remove unrecorded %s %s: %w", kind, info.ID, err)
				}
			}
		}
	}
	return nil
}

// Close ends the service's event streams and its streaming server: every
// exec's process is killed, attachments are dropped (their containers go
// on), forwarded connections are closed.
func (s *RuntimeService) Close() error {
	s.events.close()
	return s.stream.close()
}

// handler returns the runtime of a pod's handler.
func (s *RuntimeService) handler(name string) (*runtime.Runtime, error) {
	rt, ok := s.handlers[name]
	if !ok && name == "docker" {
		return nil, fmt.Errorf("runtime handler %q: Docker cannot hold a pod's namespaces in a container created and never started (it joins only running containers', never their UTS or user namespace), so berth-cri serves no Docker handler: %w", name, errdefs.ErrNotImplemented)
	}
	if !ok {
		var known []string
		for k := range s.handlers {
			known = append(known, fmt.Sprintf("%q", k))
		}
		sort.Strings(known)
		return nil, fmt.Errorf("runtime handler %q: not one of %s: %w", name, strings.Join(known, ", "), errdefs.ErrNotFound)
	}
	return rt, nil
}

// Version names berth and the CRI API version it speaks.
func (*RuntimeService) Version(context.Context, *cri.VersionRequest) (*cri.VersionResponse, error) {
	return &cri.VersionResponse{Version: "0.1.0", RuntimeName: "berth", RuntimeVersion: Version, RuntimeApiVersion: "v1"}, nil
}

// Status says what is true: the runtime is ready once it serves, the
// network once a CNI configuration and its plugins are there.
func (s *RuntimeService) Status(ctx context.Context, req *cri.StatusRequest) (*cri.StatusResponse, error) {
	netReady := &cri.RuntimeCondition{Type: cri.NetworkReady, Status: true}
	switch {
	case s.net == nil:
		netReady.Status, netReady.Reason, netReady.Message = false, "NoNetwork", "berth-cri runs without a CNI network"
	default:
		if err := s.net.Status(); err != nil {
			netReady.Status, netReady.Reason, netReady.Message = false, "NetworkPluginNotReady", err.Error()
		}
	}
	resp := &cri.StatusResponse{Status: &cri.RuntimeStatus{Conditions: []*cri.RuntimeCondition{
		{Type: cri.RuntimeReady, Status: true},
		netReady,
	}}}
	for name, rt := range s.handlers {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &cri.RuntimeHandler{
			Name: name,
			// Recursive read-only binds: the runtime's volume manager
			// makes its mount of the host path read-only all the way
			// down, whatever the engine.
			Features: &cri.RuntimeHandlerFeatures{UserNamespaces: rt.Capabilities().UserNamespace, RecursiveReadOnlyMounts: true},
		})
	}
	sort.Slice(resp.RuntimeHandlers, func(i, j int) bool { return resp.RuntimeHandlers[i].Name < resp.RuntimeHandlers[j].Name })
	// Supplemental groups policies (Merge and Strict) and the user a
	// container's status reports.
	resp.Features = &cri.RuntimeFeatures{SupplementalGroupsPolicy: true}
	if req.GetVerbose() {
		resp.Info = map[string]string{"config": fmt.Sprintf(`{"stateDir":%q}`, s.dir)}
	}
	return resp, nil
}

// RuntimeConfig tells the kubelet the cgroup driver: berth places
// containers in cgroupfs paths of its own.
func (s *RuntimeService) RuntimeConfig(context.Context, *cri.RuntimeConfigRequest) (*cri.RuntimeConfigResponse, error) {
	return &cri.RuntimeConfigResponse{Linux: &cri.LinuxRuntimeConfiguration{CgroupDriver: cri.CgroupDriver_CGROUPFS}}, nil
}

// UpdateRuntimeConfig takes the pod CIDR the kubelet gives; berth's CNI
// configuration has its own ranges, so there is nothing to change.
func (s *RuntimeService) UpdateRuntimeConfig(context.Context, *cri.UpdateRuntimeConfigRequest) (*cri.UpdateRuntimeConfigResponse, error) {
	return &cri.UpdateRuntimeConfigResponse{}, nil
}

// makeInfraRootfs makes the root filesystem every infra container shares:
// the mount points the kernel's filesystems need and an empty executable
// /pause (the infra's init waits before it would run it, for ever).
func (s *RuntimeService) makeInfraRootfs() error {
	root := s.infraRootfs()
	for _, d := range []string{"proc", "dev", "sys", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("cri: infra root filesystem: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(root, "pause"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("cri: infra root filesystem: %w", err)
	}
	return f.Close()
}

func (s *RuntimeService) infraRootfs() string { return filepath.Join(s.dir, "infra-rootfs") }

// podDir holds a pod's files that its containers mount: hostname, hosts,
// resolv.conf.
func (s *RuntimeService) podDir(id string) string { return filepath.Join(s.dir, "pods", id) }

// grpcError gives err the gRPC code of its errdefs class.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}
