package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

// Create implements driver.Runtime.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) error {
	if err := checkCreate(req); err != nil {
		return err
	}
	spec, err := copySpec(req.Spec)
	if err != nil {
		return err
	}
	idm := r.newIDMapper(req.ID)
	created := false
	defer func() { idm.done(created) }()
	t := &translation{remap: r.remap, cgroupns: r.cgroupns, mapBind: idm.mapBind}
	if err := translate(spec, t); err != nil {
		return err
	}
	if err := translateRawDevices(req.Devices, t); err != nil {
		return err
	}
	if err := r.configure(req, spec, t); err != nil {
		return err
	}
	res, err := r.createContainer(ctx, req, t)
	if err != nil {
		return err
	}
	if err := r.completeCreate(ctx, req, res); err != nil {
		return err
	}
	created = true
	return nil
}

// checkCreate refuses the requests Docker cannot serve before anything is
// translated.
func checkCreate(req *driver.CreateRequest) error {
	if len(req.ID) < 2 {
		return invalid("container ID %q: Docker names are at least two characters long", req.ID)
	}
	if req.Image == "" && (req.Spec.Root == nil || req.Spec.Root.Path == "") {
		return invalid("no image given")
	}
	if req.OpenStdin && req.IO.Stdin != nil {
		return invalid("standard input both open for attachments and given")
	}
	if req.StdinOnce && !req.OpenStdin {
		return invalid("stdin once without an open standard input")
	}
	return unsupportedRequest(req)
}

// configure completes the translated container with what is not in the
// spec: the record and labels, the image, the restart and log policies,
// and the streams to attach.
func (r *Runtime) configure(req *driver.CreateRequest, spec *specs.Spec, t *translation) error {
	labels, err := newLabels(req.ID, r.scope, &record{Spec: spec, Labels: req.Labels, OpenStdin: req.OpenStdin})
	if err != nil {
		return err
	}
	t.config.Labels = labels
	t.config.Image = req.Image
	if req.ImageSource == nil && req.Image != "" && !r.daemonImages {
		return fmt.Errorf("image %q: the runtime has no image store, and this Docker backend was not opened WithDaemonImages to run the daemon's own images: %w", req.Image, errdefs.ErrFailedPrecondition)
	}
	if req.ImageSource != nil {
		t.config.Labels[LabelStoreImage] = req.ImageSource.ConfigDigest
	}
	t.host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	t.host.LogConfig = logConfig(r.logDriver, req.Log)
	switch {
	case req.IO.Stdin != nil:
		// Stdin stays open until the attached copy closes it.
		t.config.OpenStdin, t.config.StdinOnce, t.config.AttachStdin = true, true, true
	case req.OpenStdin:
		// Open for Attach; the daemon closes it at the end of the first
		// attachment's input with StdinOnce (no terminal: see doc.go).
		t.config.OpenStdin, t.config.StdinOnce = true, req.StdinOnce
	}
	t.config.AttachStdout, t.config.AttachStderr = req.IO.Stdout != nil, req.IO.Stderr != nil
	return nil
}

// createContainer creates the Docker container, loading the store's image
// into the daemon first (again, if it went meanwhile).
func (r *Runtime) createContainer(ctx context.Context, req *driver.CreateRequest, t *translation) (client.ContainerCreateResult, error) {
	var res client.ContainerCreateResult
	var err error
	for attempt := 0; ; attempt++ {
		if req.ImageSource != nil {
			if t.config.Image, err = r.ensureImage(ctx, req.ImageSource); err != nil {
				return res, err
			}
		}
		res, err = r.eng.ContainerCreate(ctx, client.ContainerCreateOptions{Name: req.ID, Config: t.config, HostConfig: t.host})
		// The image berth loaded may go between its load and this
		// create, with the last other container that used it (see
		// releaseImage): load it again.
		if req.ImageSource == nil || !errdefs.IsNotFound(err) || attempt == 2 {
			break
		}
	}
	if errdefs.IsConflict(err) {
		return res, fmt.Errorf("the Docker name %q is taken: %v: %w", req.ID, err, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return res, classify(err)
	}
	return res, nil
}

// completeCreate refuses a container Docker created with warnings and
// attaches the caller's streams; on failure, the container is removed.
func (r *Runtime) completeCreate(ctx context.Context, req *driver.CreateRequest, res client.ContainerCreateResult) error {
	r.remember(req.ID, res.ID)
	var size *specs.Box
	if p := req.Spec.Process; p.Terminal && p.ConsoleSize != nil {
		b := *p.ConsoleSize
		size = &b
	}
	r.learnStartSize(res.ID, size)
	fail := func(err error) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_, _ = r.eng.ContainerRemove(cctx, res.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		r.forget(req.ID)
		r.mu.Lock()
		delete(r.sizes, res.ID)
		r.mu.Unlock()
		return err
	}
	if len(res.Warnings) > 0 {
		// Docker drops what the host cannot apply, with a warning: berth
		// does not run a container other than the one asked for.
		return fail(notImplemented("Docker would drop part of the spec: %s", strings.Join(res.Warnings, "; ")))
	}
	if req.IO.Stdin != nil || req.IO.Stdout != nil || req.IO.Stderr != nil {
		a, err := r.attach(ctx, res.ID, req.IO, req.Spec.Process.Terminal)
		if err != nil {
			return fail(classify(err))
		}
		r.mu.Lock()
		r.streams[req.ID] = a
		r.mu.Unlock()
	}
	return nil
}

// copySpec deep-copies a spec: the translation adjusts the copy that
// becomes the record.
func copySpec(s *specs.Spec) (*specs.Spec, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, invalid("spec: %v", err)
	}
	var out specs.Spec
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, invalid("spec: %v", err)
	}
	return &out, nil
}
