package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/runtime"
)

// CreateContainer creates a container in a pod, from an image of the
// store.
func (s *RuntimeService) CreateContainer(ctx context.Context, req *cri.CreateContainerRequest) (*cri.CreateContainerResponse, error) {
	id, err := s.createContainer(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return &cri.CreateContainerResponse{ContainerId: id}, nil
}

func (s *RuntimeService) createContainer(ctx context.Context, req *cri.CreateContainerRequest) (_ string, err error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if err != nil {
		return "", err
	}
	// The server's copy: it records what the create resolved (an image
	// volume's image ID).
	cfg := proto.Clone(req.GetConfig()).(*cri.ContainerConfig)
	if cfg.GetMetadata().GetName() == "" {
		return "", fmt.Errorf("container config: metadata needs a name: %w", errdefs.ErrInvalidArgument)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.stopped() {
		return "", fmt.Errorf("pod sandbox %s is stopped: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return "", err
	}
	c := &container{ID: newID(), SandboxID: sb.ID, Created: time.Now().UTC(), cfg: cfg}
	name := containerName(sb.ID, cfg.GetMetadata())
	if err := s.state.reserve(name, c.ID); err != nil {
		return "", fmt.Errorf("container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	defer func() {
		if err != nil {
			s.state.release(name, c.ID)
		}
	}()
	ref := cfg.GetImage().GetImage()
	if ref == "" {
		return "", fmt.Errorf("container %s: no image: %w", cfg.GetMetadata().GetName(), errdefs.ErrInvalidArgument)
	}
	im, err := s.images.Get(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("container %s: image %s: %w", cfg.GetMetadata().GetName(), ref, err)
	}
	root, err := s.images.Rootfs(ctx, im.Digest.String(), image.RootfsOptions{})
	if err != nil {
		return "", err
	}
	rc, err := s.containerConfig(ctx, sb, cfg, im, root, rt.SecurityPolicy())
	if err != nil {
		return "", err
	}
	c.Image, c.ImageRef, c.LogPath = im.ConfigDigest.String(), im.Digest.String(), rc.CRILog
	if _, err := rt.Create(ctx, c.ID, rc); err != nil {
		return "", err
	}
	if err := s.state.saveContainer(c); err != nil {
		if rc, err := rt.Get(context.WithoutCancel(ctx), c.ID); err == nil {
			_ = rc.Delete(context.WithoutCancel(ctx), runtime.DeleteOptions{Force: true})
		}
		return "", err
	}
	s.state.addContainer(c)
	s.events.publish(c.ID, sb.ID, cri.ContainerEventType_CONTAINER_CREATED_EVENT)
	return c.ID, nil
}

// containerHandler is the runtime of c's pod.
func (s *RuntimeService) containerHandler(c *container) (*runtime.Runtime, error) {
	sb, err := s.state.sandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	return s.handler(sb.Handler)
}

// runtimeContainer is the runtime's container of c.
func (s *RuntimeService) runtimeContainer(ctx context.Context, c *container) (*runtime.Container, error) {
	rt, err := s.containerHandler(c)
	if err != nil {
		return nil, err
	}
	return rt.Get(ctx, c.ID)
}

// runtimeInfo describes the runtime's container of c (one read of its
// state, where runtimeContainer and Info take two).
func (s *RuntimeService) runtimeInfo(ctx context.Context, c *container) (*runtime.Info, error) {
	sb, err := s.state.sandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return nil, err
	}
	return rt.Info(ctx, c.ID)
}

// lookup finds the container id names, and the runtime's.
func (s *RuntimeService) lookup(ctx context.Context, id string) (*container, *runtime.Container, error) {
	c, err := s.state.container(id)
	if err != nil {
		return nil, nil, err
	}
	rc, err := s.runtimeContainer(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	return c, rc, nil
}

// StartContainer starts a created container.
func (s *RuntimeService) StartContainer(ctx context.Context, req *cri.StartContainerRequest) (*cri.StartContainerResponse, error) {
	c, err := s.state.container(req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	sb, err := s.state.sandbox(c.SandboxID)
	if err != nil {
		return nil, grpcError(err)
	}
	// Under the pod's lock: a stop of the pod is either done (refused
	// here) or comes after, and stops this container too.
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.stopped() {
		return nil, grpcError(fmt.Errorf("container %s: its pod %s is stopped: %w", c.ID, sb.ID, errdefs.ErrFailedPrecondition))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, err := s.runtimeContainer(ctx, c)
	if err != nil {
		return nil, grpcError(err)
	}
	c.emu.Lock()
	defer c.emu.Unlock()
	if err := rc.Start(ctx); err != nil {
		return nil, grpcError(err)
	}
	c.setStarted(time.Now().UTC())
	if err := s.state.saveContainer(c); err != nil {
		return nil, grpcError(err)
	}
	s.events.publish(c.ID, c.SandboxID, cri.ContainerEventType_CONTAINER_STARTED_EVENT)
	return &cri.StartContainerResponse{}, nil
}

// StopContainer stops a running container: SIGTERM (or the image's stop
// signal), SIGKILL after the timeout. A container that is not there, or
// not running, is stopped already.
func (s *RuntimeService) StopContainer(ctx context.Context, req *cri.StopContainerRequest) (*cri.StopContainerResponse, error) {
	c, err := s.state.container(req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &cri.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if err := s.stopContainer(ctx, c, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, grpcError(err)
	}
	return &cri.StopContainerResponse{}, nil
}

func (s *RuntimeService) stopContainer(ctx context.Context, c *container, grace time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, err := s.runtimeContainer(ctx, c)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := rc.State(ctx)
	if err != nil {
		return err
	}
	switch st {
	case runtime.StatusRunning, runtime.StatusPaused:
	case runtime.StatusCreated:
		// Never started: it has nothing to stop, and stays created, as
		// containerd leaves it.
		return nil
	default:
		return nil
	}
	// Its stopped event comes from the runtime's stream, as for an exit
	// on its own.
	if err := rc.Stop(ctx, grace); err != nil && !errdefs.IsFailedPrecondition(err) {
		return err
	}
	return nil
}

// RemoveContainer removes a container, stopping it first. A container
// that is not there is removed already.
func (s *RuntimeService) RemoveContainer(ctx context.Context, req *cri.RemoveContainerRequest) (*cri.RemoveContainerResponse, error) {
	c, err := s.state.container(req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &cri.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, grpcError(err)
	}
	return &cri.RemoveContainerResponse{}, nil
}

func (s *RuntimeService) removeContainer(ctx context.Context, c *container) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, err := s.runtimeContainer(ctx, c)
	if err == nil {
		if err := rc.Delete(ctx, runtime.DeleteOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	if err := s.state.removeContainer(c); err != nil {
		return err
	}
	s.events.publish(c.ID, c.SandboxID, cri.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// containerState maps the runtime's state onto the CRI's.
func containerState(st runtime.Status) cri.ContainerState {
	switch st {
	case runtime.StatusCreated:
		return cri.ContainerState_CONTAINER_CREATED
	case runtime.StatusRunning, runtime.StatusPaused:
		return cri.ContainerState_CONTAINER_RUNNING
	case runtime.StatusStopped:
		return cri.ContainerState_CONTAINER_EXITED
	}
	return cri.ContainerState_CONTAINER_UNKNOWN
}

// ContainerStatus describes a container.
func (s *RuntimeService) ContainerStatus(ctx context.Context, req *cri.ContainerStatusRequest) (*cri.ContainerStatusResponse, error) {
	c, err := s.state.container(req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	st, err := s.containerStatus(ctx, c)
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &cri.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": fmt.Sprintf(`{"sandboxID":%q,"imageRef":%q}`, c.SandboxID, c.ImageRef)}
	}
	return resp, nil
}

func (s *RuntimeService) containerStatus(ctx context.Context, c *container) (*cri.ContainerStatus, error) {
	cfg := c.cfg
	st := &cri.ContainerStatus{
		Id:          c.ID,
		Metadata:    cfg.GetMetadata(),
		State:       cri.ContainerState_CONTAINER_UNKNOWN,
		CreatedAt:   c.Created.UnixNano(),
		Image:       &cri.ImageSpec{Image: cfg.GetImage().GetImage(), UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    c.Image,
		ImageId:     c.Image,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		LogPath:     c.LogPath,
	}
	st.Mounts = cfg.GetMounts()
	if started := c.started(); !started.IsZero() {
		st.StartedAt = started.UnixNano()
	}
	info, err := s.runtimeInfo(ctx, c)
	if err != nil {
		if errdefs.IsNotFound(err) {
			st.Reason = "NotFound"
			return st, nil
		}
		return nil, err
	}
	st.State = containerState(info.Status)
	if info.Status == runtime.StatusStopped {
		st.ExitCode, st.Reason = -1, "Unknown"
		if e := info.Exit; e != nil {
			st.ExitCode = int32(e.Code)
			st.FinishedAt = e.ExitedAt.UnixNano()
			switch {
			case e.OOMKilled:
				st.Reason = "OOMKilled"
			case e.Code == 0:
				st.Reason = "Completed"
			default:
				st.Reason = "Error"
			}
		}
		if st.StartedAt == 0 {
			st.StartedAt = st.FinishedAt
		}
	}
	if info.Spec != nil && info.Spec.Linux != nil {
		st.Resources = criResources(info.Spec)
	}
	if info.Spec != nil && info.Spec.Process != nil {
		st.User = containerUser(info.Spec.Process.User)
	}
	return st, nil
}

// containerUser is the identity the container's process starts with (the
// engine sets exactly these groups), as the CRI reports it.
func containerUser(u specs.User) *cri.ContainerUser {
	lu := &cri.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID)}
	for _, g := range u.AdditionalGids {
		lu.SupplementalGroups = append(lu.SupplementalGroups, int64(g))
	}
	return &cri.ContainerUser{Linux: lu}
}

// filterContainers are the containers whose ID and pod's ID start with id
// and pod (when given) and whose labels hold selector's.
func (s *RuntimeService) filterContainers(id, pod string, selector map[string]string) []*container {
	var out []*container
	for _, c := range s.state.listContainers() {
		if strings.HasPrefix(c.ID, id) && strings.HasPrefix(c.SandboxID, pod) && matchLabels(selector, c.cfg.GetLabels()) {
			out = append(out, c)
		}
	}
	return out
}

// ListContainers lists the containers that pass the filter.
func (s *RuntimeService) ListContainers(ctx context.Context, req *cri.ListContainersRequest) (*cri.ListContainersResponse, error) {
	f := req.GetFilter()
	resp := &cri.ListContainersResponse{}
	for _, c := range s.filterContainers(f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector()) {
		st, err := s.containerStatus(ctx, c)
		if err != nil {
			continue // removed meanwhile
		}
		if f.GetState() != nil && f.GetState().GetState() != st.State {
			continue
		}
		resp.Containers = append(resp.Containers, &cri.Container{
			Id: c.ID, PodSandboxId: c.SandboxID, Metadata: c.cfg.GetMetadata(), Image: st.Image,
			ImageRef: c.Image, ImageId: c.Image, State: st.State, CreatedAt: c.Created.UnixNano(),
			Labels: c.cfg.GetLabels(), Annotations: c.cfg.GetAnnotations(),
		})
	}
	return resp, nil
}

// UpdateContainerResources changes a container's limits while it runs.
func (s *RuntimeService) UpdateContainerResources(ctx context.Context, req *cri.UpdateContainerResourcesRequest) (*cri.UpdateContainerResourcesResponse, error) {
	_, rc, err := s.lookup(ctx, req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	r := req.GetLinux()
	var res runtime.Resources
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		res.MemoryLimit = &v
	}
	if v := r.GetCpuShares(); v > 0 {
		u := uint64(v)
		res.CPUShares = &u
	}
	if v := r.GetCpuQuota(); v != 0 {
		res.CPUQuota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		u := uint64(v)
		res.CPUPeriod = &u
	}
	if err := rc.Update(ctx, res); err != nil {
		return nil, grpcError(err)
	}
	return &cri.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog has the writer of the container's CRI log reopen its
// file (the kubelet rotated it).
func (s *RuntimeService) ReopenContainerLog(ctx context.Context, req *cri.ReopenContainerLogRequest) (*cri.ReopenContainerLogResponse, error) {
	_, rc, err := s.lookup(ctx, req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	if err := rc.ReopenLog(ctx); err != nil {
		return nil, grpcError(err)
	}
	return &cri.ReopenContainerLogResponse{}, nil
}

// maxExecOutput caps what ExecSync keeps of each stream (as the kubelet's
// own limit for probes, 16 MiB); the rest is dropped.
const maxExecOutput = 16 << 20

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ExecSync runs a command in a running container and returns its output
// and exit code; past the timeout the command is killed and the call
// fails with DeadlineExceeded. A child the command left behind holding its
// output holds up neither (runtime.Process.Wait cuts the output), and is
// not killed: as with containerd and Docker, it is the container's.
func (s *RuntimeService) ExecSync(ctx context.Context, req *cri.ExecSyncRequest) (*cri.ExecSyncResponse, error) {
	c, rc, err := s.lookup(ctx, req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	if len(req.GetCmd()) == 0 {
		return nil, grpcError(fmt.Errorf("exec in %s: no command: %w", c.ID, errdefs.ErrInvalidArgument))
	}
	info, err := rc.Info(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	stdout := &cappedBuffer{max: maxExecOutput}
	stderr := &cappedBuffer{max: maxExecOutput}
	p := info.Spec.Process
	proc, err := rc.Exec(ctx, &runtime.ProcessSpec{Args: req.GetCmd(), Env: p.Env, Cwd: p.Cwd, User: &p.User}, runtime.IO{Stdout: stdout, Stderr: stderr})
	if err != nil {
		return nil, grpcError(err)
	}
	wctx := ctx
	if t := req.GetTimeout(); t > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	es, err := proc.Wait(wctx)
	if err != nil {
		_ = proc.Signal(context.WithoutCancel(ctx), syscall.SIGKILL)
		_, _ = proc.Wait(context.WithoutCancel(ctx))
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, grpcError(fmt.Errorf("exec in %s: timed out after %ds: %w", c.ID, req.GetTimeout(), context.DeadlineExceeded))
		}
		return nil, grpcError(err)
	}
	return &cri.ExecSyncResponse{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes(), ExitCode: int32(es.Code)}, nil
}

var _ io.Writer = (*cappedBuffer)(nil)
