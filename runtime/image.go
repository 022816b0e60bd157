package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/errclass"
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

// releaseImage drops a container's holds on its image's unpacked tree
// and on those of its image mounts, all at once: one lock of the store,
// and no record of how many mounts it had (a create that failed half-way
// holds some of them).
func (r *Runtime) releaseImage(ctx context.Context, id string) error {
	if r.images == nil {
		return nil
	}
	holders := []string{rootfsHolder(id)}
	for i := range MaxImageMounts {
		holders = append(holders, imageMountHolder(id, i))
	}
	return r.images.ReleaseRootfs(ctx, holders...)
}

// MaxImageMounts is the most image mounts a container may have.
const MaxImageMounts = 64

// ImageMount mounts an image of the runtime's store in a container: its
// unpacked tree (Store.Rootfs, the one its containers run on, shared and
// never written), or a path of it, bound at Destination read-only,
// nosuid and nodev, whatever else the config asks. The bind goes through
// the volume manager as a spec's bind of a host path does (opened once
// without following links), and is ID-mapped in a user namespace, so the
// image's files belong to the users the image names. The container holds
// the tree until it is deleted, even if the image is removed meanwhile.
//
// The runtime needs an image store (failed-precondition without one). An
// image the store does not have is not-found, naming it; a SubPath the
// image lacks is not-found too; a bad destination or sub path is
// invalid-argument. A refused create holds nothing.
type ImageMount struct {
	// Image names the image in the runtime's store, as Config.Image
	// does (a tag, a digest, an ID).
	Image string
	// Destination is the absolute, clean path in the container; not "/",
	// and not where the spec or another image mount mounts something.
	Destination string
	// SubPath, when set, is the path of the image's tree to mount instead
	// of its root: relative, without "..", resolved inside the tree (a
	// link of the image never leads out of it), a directory or a regular
	// file.
	SubPath string
}

// imageMountHolder names container id's hold on the tree of its i-th image
// mount: never a container's root image hold ("container." + an ID), nor
// another mount's (the index ends at the first dot, IDs follow).
func imageMountHolder(id string, i int) string { return fmt.Sprintf("image-mount.%d.%s", i, id) }

// validateImageMounts checks the image mounts of c.
func validateImageMounts(id string, c *Config) error {
	if len(c.ImageMounts) > MaxImageMounts {
		return invalidConfig(id, "%d image mounts: at most %d", len(c.ImageMounts), MaxImageMounts)
	}
	taken := map[string]bool{}
	for _, m := range c.Spec.Mounts {
		taken[filepath.Clean(m.Destination)] = true
	}
	for _, m := range c.ImageMounts {
		switch {
		case m.Image == "":
			return invalidConfig(id, "image mount at %q names no image", m.Destination)
		case !filepath.IsAbs(m.Destination) || filepath.Clean(m.Destination) != m.Destination || m.Destination == "/":
			return invalidConfig(id, "image mount destination %q is not an absolute, clean path below /", m.Destination)
		case m.SubPath != "" && !filepath.IsLocal(m.SubPath):
			return invalidConfig(id, "image mount at %s: sub path %q is not a relative path inside the image", m.Destination, m.SubPath)
		case taken[m.Destination]:
			return invalidConfig(id, "image mount at %s: something else is mounted there", m.Destination)
		}
		taken[m.Destination] = true
	}
	return nil
}

// mountImages holds the tree of each image mount for container id and
// adds its bind to the spec, read-only, for attachBinds to put through the
// volume manager.
func (r *Runtime) mountImages(ctx context.Context, id string, spec *specs.Spec, mounts []ImageMount) error {
	for i, m := range mounts {
		tree, err := r.images.Rootfs(ctx, m.Image, image.RootfsOptions{Holder: imageMountHolder(id, i)})
		if err != nil {
			return fmt.Errorf("image mount at %s: %w", m.Destination, err)
		}
		src := tree
		if m.SubPath != "" {
			// The tree is the store's and never changes: a path resolved
			// in it stays what it is.
			if src, err = securejoin.SecureJoin(tree, m.SubPath); err != nil {
				return fmt.Errorf("image mount at %s: sub path %q of image %s: %v: %w", m.Destination, m.SubPath, m.Image, err, errdefs.ErrInvalidArgument)
			}
			if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("image mount at %s: image %s has no %s: %w", m.Destination, m.Image, m.SubPath, errdefs.ErrNotFound)
			} else if err != nil {
				return fmt.Errorf("image mount at %s: sub path %q of image %s: %w", m.Destination, m.SubPath, m.Image, errclass.OS(err))
			}
		}
		// Read-only all the way down, whatever anything else says: the
		// tree is every container's of the image.
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m.Destination, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "rro"}})
	}
	return nil
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
