package runtime

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/runtime/driver"
)

// WithImageStore gives the runtime berth's image store: Config.Image then
// names an image of it (imported with its limits and tag policy), which
// every backend gets in the form it takes (an unpacked tree, an archive).
func WithImageStore(s *image.Store) Option {
	return func(o *options) error {
		o.images = s
		return nil
	}
}

// Images returns the runtime's image store, or nil.
func (r *Runtime) Images() *image.Store { return r.images }

// rootfsHolder names a container's hold on an unpacked image tree.
func rootfsHolder(id string) string { return "container." + id }

// resolveImage looks cfg.Image up in the store, fills what the caller left
// out of the process from the image's config (as docker run does), and
// returns the source the backend gets. Without a store the reference goes
// to the backend as it is (an engine with images of its own may know it).
func (r *Runtime) resolveImage(ctx context.Context, id, ref string, spec *specs.Spec, keep bool) (*driver.ImageSource, error) {
	if r.images == nil {
		return nil, nil
	}
	im, err := r.images.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !keep {
		if err := applyImageConfig(spec, im); err != nil {
			return nil, err
		}
	}
	digest := im.Digest.String()
	return &driver.ImageSource{
		Digest:       digest,
		ConfigDigest: im.ConfigDigest.String(),
		Rootfs: func(ctx context.Context) (string, error) {
			return r.images.Rootfs(ctx, digest, image.RootfsOptions{Holder: rootfsHolder(id)})
		},
		WriteArchive: func(ctx context.Context, w io.Writer) error {
			return r.images.Export(ctx, digest, w, image.ExportOptions{Format: image.FormatDocker})
		},
	}, nil
}

// applyImageConfig completes the process from the image's config.
func applyImageConfig(spec *specs.Spec, im *image.Image) error {
	return completeProcess(spec, im.Config(), im.Digest.String())
}

// completeProcess fills what the caller left out of the process from an
// image config, as docker run does: the entrypoint before the caller's
// arguments (or the image's command), the image's environment under the
// caller's, its working directory and user unless the caller chose.
func completeProcess(spec *specs.Spec, cfg ocispec.ImageConfig, name string) error {
	p := spec.Process
	args := p.Args
	if len(args) == 0 {
		args = cfg.Cmd
	}
	p.Args = append(slices.Clone(cfg.Entrypoint), args...)
	if len(p.Args) == 0 {
		return fmt.Errorf("image %s names no command and none was given: %w", name, errdefs.ErrInvalidArgument)
	}
	env := slices.Clone(cfg.Env)
	for _, e := range p.Env {
		k, _, _ := strings.Cut(e, "=")
		env = slices.DeleteFunc(env, func(x string) bool { xk, _, _ := strings.Cut(x, "="); return xk == k })
		env = append(env, e)
	}
	p.Env = env
	if (p.Cwd == "" || p.Cwd == "/") && cfg.WorkingDir != "" {
		p.Cwd = cfg.WorkingDir
	}
	if cfg.User != "" && p.User.UID == 0 && p.User.GID == 0 {
		u, g, _ := strings.Cut(cfg.User, ":")
		uid, err := strconv.ParseUint(u, 10, 32)
		if err != nil {
			return fmt.Errorf("image %s runs as user %q: only numeric users are supported: %w", name, cfg.User, errdefs.ErrNotImplemented)
		}
		p.User.UID = uint32(uid)
		if g != "" {
			gid, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return fmt.Errorf("image %s runs as group %q: only numeric groups are supported: %w", name, g, errdefs.ErrNotImplemented)
			}
			p.User.GID = uint32(gid)
		}
	}
	return nil
}

// releaseImage drops a container's hold on its image's unpacked tree.
func (r *Runtime) releaseImage(ctx context.Context, id string) error {
	if r.images == nil {
		return nil
	}
	return r.images.ReleaseRootfs(ctx, rootfsHolder(id))
}

// CommitOptions tune Commit.
type CommitOptions struct {
	// Tag names the new image in the store; empty keeps it by digest.
	Tag string
	// AllowRetag lets Tag move from the image it names now.
	AllowRetag bool
}

// Commit stores a snapshot of the container's root filesystem as an image
// of the runtime's store (a Nova snapshot): one layer, the container's
// process as its config. The image can then be exported (docker-save, OCI),
// pushed to Glance, or run. It needs Capabilities.Snapshot and an image
// store.
func (c *Container) Commit(ctx context.Context, opts CommitOptions) (*image.Image, error) {
	if err := c.capable("commit", c.r.caps.Snapshot); err != nil {
		return nil, err
	}
	if c.r.images == nil {
		return nil, fmt.Errorf("container %q: commit: the runtime has no image store: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	info, err := c.info(ctx)
	if err != nil {
		return nil, err
	}
	cfg := ocispec.ImageConfig{}
	if p := info.Spec.Process; p != nil {
		cfg.Cmd, cfg.Env, cfg.WorkingDir = p.Args, p.Env, p.Cwd
		if p.User.UID != 0 || p.User.GID != 0 {
			cfg.User = fmt.Sprintf("%d:%d", p.User.UID, p.User.GID)
		}
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(c.Snapshot(ctx, pw)) }()
	res, err := c.r.images.Commit(ctx, pr, image.CommitOptions{Config: cfg, Tags: image.TagPolicy{Name: opts.Tag, AllowRetag: opts.AllowRetag}})
	pr.Close()
	if err != nil {
		return nil, wrap(c.id, err)
	}
	im, err := c.r.images.Get(ctx, res.Images[0].Digest.String())
	return im, wrap(c.id, err)
}
