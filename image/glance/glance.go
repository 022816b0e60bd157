package glance

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/errclass"
)

// Property names berth sets on the Glance images it pushes.
const (
	// PropertyDigest holds the image's manifest digest.
	PropertyDigest = "berth_manifest_digest"
	// PropertyRef holds the reference the image was pushed from.
	PropertyRef = "berth_ref"
)

// Options tune the Glance client.
type Options struct {
	// Token is sent as X-Auth-Token when set.
	Token string
	// HTTPClient replaces http.DefaultClient.
	HTTPClient *http.Client
}

func client(glanceURL string, o Options) (*gophercloud.ServiceClient, error) {
	u, err := url.Parse(glanceURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("glance URL %q: want http(s)://HOST[:PORT][/PATH]: %w", glanceURL, errdefs.ErrInvalidArgument)
	}
	endpoint := strings.TrimSuffix(glanceURL, "/") + "/"
	pc := &gophercloud.ProviderClient{}
	if o.HTTPClient != nil {
		pc.HTTPClient = *o.HTTPClient
	}
	if o.Token != "" {
		pc.SetToken(o.Token)
	}
	base := endpoint
	if !strings.HasSuffix(base, "/v2/") {
		base += "v2/"
	}
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: endpoint, ResourceBase: base, Type: "image"}, nil
}

// classify gives Glance's answers their errdefs class: an HTTP status the
// class errhttp gives it (413, an image over Glance's quota, is
// resource-exhausted), a Glance that cannot be reached unavailable.
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	var code gophercloud.ErrUnexpectedResponseCode
	switch {
	case errors.As(err, &code) && code.Actual == http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrResourceExhausted)
	case errors.As(err, &code):
		return fmt.Errorf("%s: %v: %w", what, err, errhttp.ToNative(code.Actual))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, errclass.Ensure(err))
}

// PushOptions tune Push.
type PushOptions struct {
	// Name is the Glance image's name (default: the reference).
	Name string
	// Visibility is Glance's (private, shared, community, public); empty
	// leaves Glance's default.
	Visibility string
	Options
}

// Push uploads the image ref names in store to Glance at glanceURL as a
// docker-save archive and returns the new Glance image's ID. The archive
// streams from the store to Glance; a failed upload deletes the Glance
// image it created.
func Push(ctx context.Context, glanceURL string, store *image.Store, ref string, opts PushOptions) (string, error) {
	im, err := store.Get(ctx, ref)
	if err != nil {
		return "", err
	}
	c, err := client(glanceURL, opts.Options)
	if err != nil {
		return "", err
	}
	name := opts.Name
	if name == "" {
		name = ref
	}
	create := images.CreateOpts{
		Name: name, ContainerFormat: "docker", DiskFormat: "raw",
		Properties: map[string]string{PropertyDigest: im.Digest.String(), PropertyRef: ref},
	}
	if opts.Visibility != "" {
		v := images.ImageVisibility(opts.Visibility)
		create.Visibility = &v
	}
	gi, err := images.Create(ctx, c, create).Extract()
	if err != nil {
		return "", classify(fmt.Sprintf("glance %s: create image", glanceURL), err)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(store.Export(ctx, ref, pw, image.ExportOptions{Format: image.FormatDocker}))
	}()
	err = imagedata.Upload(ctx, c, gi.ID, pr).ExtractErr()
	pr.CloseWithError(err)
	if err != nil {
		_ = images.Delete(context.WithoutCancel(ctx), c, gi.ID).ExtractErr()
		return "", classify(fmt.Sprintf("glance %s: upload image %s", glanceURL, gi.ID), err)
	}
	return gi.ID, nil
}

// PullOptions tune Pull.
type PullOptions struct {
	// Import is how the archive is imported (limits, tag policy). Its
	// Verify is taken by Pull.
	Import image.ImportOptions
	Options
}

// Pull downloads Glance image id and imports it into store. The download
// is hashed as it streams and nothing is committed unless it matches the
// hash Glance recorded (os_hash_algo/os_hash_value, else the MD5
// checksum): a mismatch is data-loss. An image Glance holds no hash for,
// or that is not active, is refused (failed-precondition).
func Pull(ctx context.Context, glanceURL, id string, store *image.Store, opts PullOptions) (*image.ImportResult, error) {
	c, err := client(glanceURL, opts.Options)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("glance %s: image %s", glanceURL, id)
	gi, err := images.Get(ctx, c, id).Extract()
	if err != nil {
		return nil, classify(what, err)
	}
	if gi.Status != images.ImageStatusActive {
		return nil, fmt.Errorf("%s: status %q, not active: %w", what, gi.Status, errdefs.ErrFailedPrecondition)
	}
	h, want, err := expectedHash(gi)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	body, err := imagedata.Download(ctx, c, id).Extract()
	if err != nil {
		return nil, classify(what, err)
	}
	defer body.Close()
	var n int64
	r := io.TeeReader(body, writerFunc(func(p []byte) (int, error) {
		n += int64(len(p))
		return h.Write(p)
	}))
	io2 := opts.Import
	io2.Verify = func() error {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("download (%d bytes) hashes to %s, Glance recorded %s: %w", n, got, want, errdefs.ErrDataLoss)
		}
		if gi.SizeBytes > 0 && n != gi.SizeBytes {
			return fmt.Errorf("download has %d bytes, Glance recorded %d: %w", n, gi.SizeBytes, errdefs.ErrDataLoss)
		}
		return nil
	}
	res, err := store.ImportReader(ctx, r, io2)
	if err != nil {
		return nil, classify(what, err)
	}
	return res, nil
}

// expectedHash picks the strongest hash Glance recorded for an image.
func expectedHash(gi *images.Image) (hash.Hash, string, error) {
	algo, _ := gi.Properties["os_hash_algo"].(string)
	value, _ := gi.Properties["os_hash_value"].(string)
	if value != "" {
		switch algo {
		case "sha512":
			return sha512.New(), strings.ToLower(value), nil
		case "sha256":
			return sha256.New(), strings.ToLower(value), nil
		case "sha384":
			return sha512.New384(), strings.ToLower(value), nil
		}
		return nil, "", fmt.Errorf("hash algorithm %q is not supported: %w", algo, errdefs.ErrNotImplemented)
	}
	if gi.Checksum != "" {
		return md5.New(), strings.ToLower(gi.Checksum), nil
	}
	return nil, "", fmt.Errorf("Glance recorded no hash for the image: %w", errdefs.ErrFailedPrecondition)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Delete removes Glance image id (an image Push made, say). An image
// Glance does not have is not-found.
func Delete(ctx context.Context, glanceURL, id string, opts Options) error {
	c, err := client(glanceURL, opts)
	if err != nil {
		return err
	}
	return classify(fmt.Sprintf("glance %s: image %s", glanceURL, id), images.Delete(ctx, c, id).ExtractErr())
}
