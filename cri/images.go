package cri

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
)

// ImageService is the CRI image service over a store and a registry
// client.
type ImageService struct {
	cri.UnimplementedImageServiceServer
	store    *image.Store
	registry *registry.Client
}

// NewImageService serves store, pulling with c.
func NewImageService(store *image.Store, c *registry.Client) *ImageService {
	return &ImageService{store: store, registry: c}
}

// criImage describes a stored image as the CRI does: its ID is the
// config digest (docker's image ID), as critest checks.
func criImage(im *image.Image) *cri.Image {
	out := &cri.Image{
		Id:          im.ConfigDigest.String(),
		RepoTags:    im.Tags,
		RepoDigests: im.RepoDigests(),
		Size:        uint64(im.Size),
		Spec:        &cri.ImageSpec{Image: im.ConfigDigest.String()},
	}
	// The user: a numeric UID goes to Uid, a name to Username (the
	// group part, if any, is not the CRI's concern).
	user := im.User()
	for i := range len(user) {
		if user[i] == ':' {
			user = user[:i]
			break
		}
	}
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		out.Uid = &cri.Int64Value{Value: uid}
	} else if user != "" {
		out.Username = user
	}
	return out
}

// get finds the image a CRI image spec names: a tag, NAME@DIGEST, a
// manifest digest or the image ID (config digest, with or without its
// "sha256:").
func (s *ImageService) get(ctx context.Context, ref string) (*image.Image, error) {
	if ref == "" {
		return nil, fmt.Errorf("no image named: %w", errdefs.ErrInvalidArgument)
	}
	im, err := s.store.Get(ctx, ref)
	if (errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err)) && len(ref) == 64 && strings.Trim(ref, "0123456789abcdef") == "" {
		// An image ID without its algorithm: what is not there is not
		// found, not a bad name.
		return s.store.Get(ctx, "sha256:"+ref)
	}
	return im, err
}

// ListImages lists the store's images, filtered by the spec's image if
// one is given.
func (s *ImageService) ListImages(ctx context.Context, req *cri.ListImagesRequest) (*cri.ListImagesResponse, error) {
	if f := req.GetFilter().GetImage().GetImage(); f != "" {
		im, err := s.get(ctx, f)
		if errdefs.IsNotFound(err) {
			return &cri.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return &cri.ListImagesResponse{Images: []*cri.Image{criImage(im)}}, nil
	}
	list, err := s.store.List(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &cri.ListImagesResponse{}
	for _, im := range list {
		resp.Images = append(resp.Images, criImage(im))
	}
	return resp, nil
}

// ImageStatus describes one image; an image that is not there is a nil
// image, not an error.
func (s *ImageService) ImageStatus(ctx context.Context, req *cri.ImageStatusRequest) (*cri.ImageStatusResponse, error) {
	im, err := s.get(ctx, req.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &cri.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &cri.ImageStatusResponse{Image: criImage(im)}
	if req.GetVerbose() {
		resp.Info = map[string]string{"manifestDigest": im.Digest.String(), "imported": im.Imported.Format(time.RFC3339)}
	}
	return resp, nil
}

// PullImage pulls through the registry client; credentials in the request
// are used for that pull alone. The reference the response gives is the
// image ID.
func (s *ImageService) PullImage(ctx context.Context, req *cri.PullImageRequest) (*cri.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	c := s.registry
	if a := req.GetAuth(); a != nil {
		r, err := registry.ParseReference(ref)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		c = c.WithKeychain(staticKeychain{registry: r.Registry(), a: authn.FromConfig(authn.AuthConfig{
			Username: a.Username, Password: a.Password, Auth: a.Auth,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
		})})
	}
	res, err := c.Pull(ctx, s.store, ref, image.ImportOptions{})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if len(res.Images) != 1 {
		return nil, errgrpc.ToGRPC(fmt.Errorf("pull %s gave %d images: %w", ref, len(res.Images), errdefs.ErrInternal))
	}
	return &cri.PullImageResponse{ImageRef: res.Images[0].Config.String()}, nil
}

// staticKeychain gives a CRI pull's own credentials to the registry the
// image's reference names, and to no other host (a mirror tried first
// gets none: the kubelet chose them for that registry).
type staticKeychain struct {
	registry string
	a        authn.Authenticator
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.registry {
		return k.a, nil
	}
	return authn.Anonymous, nil
}

// RemoveImage removes the image and all its tags. Removing an image that
// is not there succeeds, as the CRI asks.
func (s *ImageService) RemoveImage(ctx context.Context, req *cri.RemoveImageRequest) (*cri.RemoveImageResponse, error) {
	im, err := s.get(ctx, req.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &cri.RemoveImageResponse{}, nil
	}
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// Every tag, then the image by digest: the image goes with its last
	// tag, or by digest when it has none.
	for _, t := range im.Tags {
		if _, err := s.store.Remove(ctx, t); err != nil && !errdefs.IsNotFound(err) {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	if _, err := s.store.Remove(ctx, im.Digest.String()); err != nil && !errdefs.IsNotFound(err) {
		return nil, errgrpc.ToGRPC(err)
	}
	return &cri.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the filesystem that holds the store: the bytes and
// inodes the store's directory uses there.
func (s *ImageService) ImageFsInfo(ctx context.Context, _ *cri.ImageFsInfoRequest) (*cri.ImageFsInfoResponse, error) {
	used, inodes, err := s.store.Usage(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.store.Dir(), &st); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("image store %s: %w", s.store.Dir(), err))
	}
	fs := &cri.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &cri.FilesystemIdentifier{Mountpoint: s.store.Dir()},
		UsedBytes:  &cri.UInt64Value{Value: uint64(used)},
		InodesUsed: &cri.UInt64Value{Value: uint64(inodes)},
	}
	return &cri.ImageFsInfoResponse{ImageFilesystems: []*cri.FilesystemUsage{fs}}, nil
}
