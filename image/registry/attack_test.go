package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/errclass"
)

// The hostile tenant: a registry the tenant runs, named by the pull, bent
// every way its documents, headers, redirects and timing allow.

// manifestOf is an image manifest naming config and layers as given,
// lies included.
func manifestOf(config ocispec.Descriptor, layers ...ocispec.Descriptor) []byte {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers}
	if layers == nil {
		m.Layers = []ocispec.Descriptor{}
	}
	m.SchemaVersion = 2
	b, _ := json.Marshal(m)
	return b
}

// endless answers a GET of a path ending in suffix with junk without end
// (until the client goes), counting what it wrote in n.
func endless(suffix string, n *atomic.Int64) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, suffix) || r.Method != http.MethodGet {
			return false
		}
		junk := make([]byte, 64<<10)
		for i := 0; i < 1<<14 && r.Context().Err() == nil; i++ {
			k, err := w.Write(junk)
			n.Add(int64(k))
			if err != nil {
				break
			}
		}
		return true
	}
}

// offLoopback is a transport that carries loopback requests and records
// (and fails) any other: no test reaches the network.
type offLoopback struct {
	mu   sync.Mutex
	sent []string
	base http.RoundTripper
}

func newOffLoopback() *offLoopback {
	return &offLoopback{base: http.DefaultTransport.(*http.Transport).Clone()}
}

func (o *offLoopback) RoundTrip(r *http.Request) (*http.Response, error) {
	if !isLoopback(r.URL.Host) || (r.URL.Scheme != "http" && r.URL.Scheme != "https") {
		o.mu.Lock()
		o.sent = append(o.sent, r.URL.String())
		o.mu.Unlock()
		return nil, fmt.Errorf("no network in tests")
	}
	return o.base.RoundTrip(r)
}

func (o *offLoopback) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.sent...)
}

// TestAttackRefused: each attack is refused with its class, in bounded
// time, leaving the store (files, store.json, tags, ingest/) as it was
// and no request where the policy allows none.
func TestAttackRefused(t *testing.T) {
	type attack struct {
		name  string
		setup func(t *testing.T, f *fakeRegistry) // serves tenant/app:1
		class error
		opts  image.ImportOptions
		// after checks what the registry saw, and what went off the
		// loopback.
		after func(t *testing.T, f *fakeRegistry, off []string)
	}
	noRequest := func(path string) func(t *testing.T, f *fakeRegistry, _ []string) {
		return func(t *testing.T, f *fakeRegistry, _ []string) {
			require.Empty(t, f.requests(path), "fetched %s", path)
		}
	}
	im := smallImage("etc/a")
	cfg := desc(ocispec.MediaTypeImageConfig, im.Config)
	lay := desc(ocispec.MediaTypeImageLayerGzip, im.Layers[0])
	// A config of 8 KiB, for the pulls that allow JSON of 4 KiB (and
	// so the 500 bytes of the manifest naming it).
	var ic ocispec.Image
	require.NoError(t, json.Unmarshal(im.Config, &ic))
	ic.Config.Labels = map[string]string{"pad": strings.Repeat("x", 8<<10)}
	bigConfig, _ := json.Marshal(ic)
	cases := []attack{
		{"config claims a layer media type and a huge size", func(t *testing.T, f *fakeRegistry) {
			// A layer's size bound is the pull's 16 GiB, not the
			// 8 MiB of a JSON document: the config must be refused
			// before a byte of it is fetched.
			big := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("cfg"), Size: 1 << 30}
			var n atomic.Int64
			f.setHook(endless(big.Digest.String(), &n))
			f.putBlob(im.Layers[0])
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(big, lay), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}, noRequest("/blobs/" + digest.FromString("cfg").String())},
		{"config claims a layer media type, larger than the JSON limit", func(t *testing.T, f *fakeRegistry) {
			c := desc(ocispec.MediaTypeImageLayerGzip, bigConfig)
			f.putBlob(bigConfig)
			f.putBlob(im.Layers[0])
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(c, lay), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{Limits: image.Limits{MaxJSONBytes: 4 << 10}}, noRequest(digest.FromBytes(bigConfig).String())},
		{"config claims a manifest media type, larger than the JSON limit", func(t *testing.T, f *fakeRegistry) {
			c := desc(ocispec.MediaTypeImageManifest, bigConfig)
			f.putBlob(bigConfig)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, bigConfig)
			f.putBlob(im.Layers[0])
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(c, lay), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{Limits: image.Limits{MaxJSONBytes: 4 << 10}}, noRequest(digest.FromBytes(bigConfig).String())},
		{"layer claims a manifest media type", func(t *testing.T, f *fakeRegistry) {
			l := lay
			l.MediaType = ocispec.MediaTypeImageManifest
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(cfg, l), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest(lay.Digest.String())},
		{"layer claims an index media type", func(t *testing.T, f *fakeRegistry) {
			l := lay
			l.MediaType = ocispec.MediaTypeImageIndex
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(cfg, l), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest(lay.Digest.String())},
		{"index entry: a manifest of a huge size", func(t *testing.T, f *fakeRegistry) {
			m := desc(ocispec.MediaTypeImageManifest, im.Manifest())
			m.Size = 1 << 40
			m.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, index(m), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}, noRequest("/manifests/sha256:")},
		{"negative layer size", func(t *testing.T, f *fakeRegistry) {
			l := lay
			l.Size = -1
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(cfg, l), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
		{"config of size 0 that has content", func(t *testing.T, f *fakeRegistry) {
			c := cfg
			c.Size = 0
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(c, lay), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, nil},
		{"one blob as the config and as a layer", func(t *testing.T, f *fakeRegistry) {
			c := cfg
			l := cfg
			l.MediaType = ocispec.MediaTypeImageLayer
			var ic ocispec.Image
			require.NoError(t, json.Unmarshal(im.Config, &ic))
			ic.RootFS.DiffIDs = []digest.Digest{cfg.Digest}
			b, _ := json.Marshal(ic)
			c = desc(ocispec.MediaTypeImageConfig, b)
			l = c
			l.MediaType = ocispec.MediaTypeImageLayer
			f.putBlob(b)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(c, l), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, nil},
		{"one layer ten thousand times", func(t *testing.T, f *fakeRegistry) {
			var ic ocispec.Image
			require.NoError(t, json.Unmarshal(im.Config, &ic))
			var ls []ocispec.Descriptor
			for range 10000 {
				ic.RootFS.DiffIDs = append(ic.RootFS.DiffIDs, imagetest.DiffID(im.Layers[0]))
				ls = append(ls, lay)
			}
			b, _ := json.Marshal(ic)
			f.putBlob(b)
			f.putBlob(im.Layers[0])
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(desc(ocispec.MediaTypeImageConfig, b), ls...), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}, noRequest(lay.Digest.String())},
		{"a config of 100000 diff IDs", func(t *testing.T, f *fakeRegistry) {
			var ic ocispec.Image
			require.NoError(t, json.Unmarshal(im.Config, &ic))
			for i := range 100000 {
				ic.RootFS.DiffIDs = append(ic.RootFS.DiffIDs, digest.FromString(fmt.Sprint(i)))
			}
			b, _ := json.Marshal(ic)
			f.putBlob(b)
			f.putBlob(im.Layers[0])
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, manifestOf(desc(ocispec.MediaTypeImageConfig, b), lay), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}, noRequest(lay.Digest.String())},
		{"root manifest served as an index", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, im.Manifest(), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
		{"root index served as a manifest", func(t *testing.T, f *fakeRegistry) {
			m := desc(ocispec.MediaTypeImageManifest, im.Manifest())
			m.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, index(m), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
		{"root manifest without a Content-Type", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", "", im.Manifest(), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
		{"an HTML page for the manifest", func(t *testing.T, f *fakeRegistry) {
			f.putManifest("tenant/app", "text/html", []byte("<html><body>Welcome to nginx!</body></html>"), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, nil},
		{"blob redirected to plain HTTP elsewhere", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				http.Redirect(w, r, "http://10.1.2.3:80"+r.URL.Path, http.StatusTemporaryRedirect)
				return true
			})
		}, errdefs.ErrPermissionDenied, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"blob redirected to a private address", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				http.Redirect(w, r, "https://169.254.169.254/latest/meta-data/", http.StatusTemporaryRedirect)
				return true
			})
		}, errdefs.ErrPermissionDenied, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"blob redirected to file://", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				w.Header().Set("Location", "file://localhost/etc/passwd")
				w.WriteHeader(http.StatusFound)
				return true
			})
		}, errdefs.ErrPermissionDenied, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"blob redirected without end", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				http.Redirect(w, r, r.URL.Path+"?n=x"+r.URL.Query().Get("n"), http.StatusFound)
				return true
			})
		}, errdefs.ErrUnavailable, image.ImportOptions{}, nil},
		{"token realm on plain HTTP, a private address", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://10.0.0.1/token",service="x"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				return true
			})
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"token realm on plain HTTP, a public address", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://203.0.113.9/token",service="x"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				return true
			})
		}, errdefs.ErrPermissionDenied, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"token realm that redirects to plain HTTP", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/token" {
					http.Redirect(w, r, "http://203.0.113.9/token", http.StatusFound)
					return true
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="x"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				return true
			})
		}, errdefs.ErrPermissionDenied, image.ImportOptions{}, func(t *testing.T, _ *fakeRegistry, off []string) {
			require.Empty(t, off)
		}},
		{"ping answers 500 forever", func(t *testing.T, f *fakeRegistry) {
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				registryError(w, http.StatusInternalServerError, "UNKNOWN")
				return true
			})
		}, errdefs.ErrUnavailable, image.ImportOptions{}, nil},
		{"blob answers 503 forever", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				registryError(w, http.StatusServiceUnavailable, "UNAVAILABLE")
				return true
			})
		}, errdefs.ErrUnavailable, image.ImportOptions{}, nil},
		{"digest pull served other content", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "0", im)
			other := smallImage("etc/other")
			f.putImage("tenant/app", "x", other)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				w.Header().Set("Docker-Content-Digest", digest.FromBytes(im.Manifest()).String())
				w.Write(other.Manifest())
				return true
			})
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
		{"blob shorter than its Content-Length", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, lay.Digest.String()) || r.Method != http.MethodGet {
					return false
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(im.Layers[0])))
				w.Write(im.Layers[0][:len(im.Layers[0])/2])
				return true
			})
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, nil},
		{"manifest gzip-encoded, a bomb", func(t *testing.T, f *fakeRegistry) {
			// net/http inflates a Content-Encoding of gzip by itself.
			bomb := imagetest.Gzip([]byte(`{"schemaVersion":2,"pad":"` + strings.Repeat("x", 32<<20) + `"}`))
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(bomb)
				return true
			})
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}, nil},
		{"digest pull served a schema 1 whose header claims the digest", func(t *testing.T, f *fakeRegistry) {
			// The library takes a signed schema 1's digest from the
			// header rather than from the bytes.
			f.putImage("tenant/app", "0", im)
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
				w.Header().Set("Docker-Content-Digest", digest.FromBytes(im.Manifest()).String())
				w.Write([]byte(`{"schemaVersion":1,"name":"tenant/app","tag":"1","fsLayers":[]}`))
				return true
			})
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}, noRequest("/blobs/")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			tc.setup(t, f)
			s, ubuntu := seeded(t)
			before := storeFiles(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			off := newOffLoopback()
			ref := f.host() + "/tenant/app:1"
			if strings.HasPrefix(tc.name, "digest pull") {
				ref = f.host() + "/tenant/app@" + digest.FromBytes(im.Manifest()).String()
			}
			start := time.Now()
			_, err := newClient(t, Options{Transport: off}).Pull(ctx, s, ref, tc.opts)
			took := time.Since(start)
			require.Error(t, err)
			t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
			require.Truef(t, errclass.Name(err) == errclass.Name(tc.class), "want %s, got %s: %v", errclass.Name(tc.class), errclass.Name(err), err)
			require.Less(t, took, 20*time.Second)
			require.Equal(t, before, storeFiles(t, s), "the store changed")
			list, err := s.List(context.Background())
			require.NoError(t, err)
			require.Len(t, list, 1)
			require.Equal(t, ubuntu, list[0].Digest)
			require.Equal(t, []string{"ubuntu:latest"}, list[0].Tags)
			if tc.after != nil {
				tc.after(t, f, off.requests())
			}
		})
	}
}

// trickle answers a GET of a path ending in suffix with body, one byte
// every gap, until the client goes.
func trickle(suffix string, body []byte, gap time.Duration) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, suffix) || r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(gap):
			}
		}
		return true
	}
}

// A tenant's registry that trickles a popular layer must not hold up
// another tenant's pull of that layer from an honest registry: pulls wait
// only for a download they would have made themselves.
func TestAttackStallsAnotherPull(t *testing.T) {
	base := imagetest.Gzip(imagetest.Tar(imagetest.File("etc/base", noise(64<<10))))
	honest := newFakeRegistry(t)
	honest.putImage("library/base", "1", imagetest.NewImage([][]byte{base}, "/bin/sh"))
	evil := newFakeRegistry(t)
	evil.putImage("tenant/app", "1", imagetest.NewImage([][]byte{base}, "/bin/evil"))
	evil.setHook(trickle(digest.FromBytes(base).String(), base, time.Second))
	s := newStore(t)
	c := newClient(t, Options{})

	evilCtx, stopEvil := context.WithCancel(context.Background())
	t.Cleanup(stopEvil)
	evilDone := make(chan error, 1)
	go func() {
		_, err := c.Pull(evilCtx, s, evil.host()+"/tenant/app:1", image.ImportOptions{})
		evilDone <- err
	}()
	// The tenant's pull is on the layer.
	require.Eventually(t, func() bool { return len(evil.requests("/blobs/"+digest.FromBytes(base).String())) > 0 }, 10*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Pull(ctx, s, honest.host()+"/library/base:1", image.ImportOptions{})
	require.NoError(t, err, "after %v", time.Since(start))
	require.Less(t, time.Since(start), 5*time.Second)
	stopEvil()
	require.ErrorIs(t, <-evilDone, context.Canceled)
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "ingest"))
	require.NoError(t, err)
	require.Empty(t, ents)
}

// A registry that serves a blob's bytes wrong, while another pull of the
// same blob waits, poisons nothing: the other pull gets its own bytes.
func TestAttackLyingFirstPull(t *testing.T) {
	base := imagetest.Gzip(imagetest.Tar(imagetest.File("etc/base", noise(64<<10))))
	bad := append([]byte(nil), base...)
	bad[len(bad)/2] ^= 0xff
	ld := digest.FromBytes(base)
	f := newFakeRegistry(t)
	f.putImage("tenant/app", "1", imagetest.NewImage([][]byte{base}, "/bin/sh"))
	// The first GET of the layer waits, then gets the wrong bytes; the
	// next ones the right ones.
	slow := make(chan struct{})
	var lied atomic.Bool
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ld.String()) || r.Method != http.MethodGet || !lied.CompareAndSwap(false, true) {
			return false
		}
		<-slow
		w.Header().Set("Content-Length", fmt.Sprint(len(bad)))
		w.Write(bad)
		return true
	})
	s := newStore(t)
	c := newClient(t, Options{})
	pull := func() chan error {
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := c.Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
			done <- err
		}()
		return done
	}
	first := pull()
	require.Eventually(t, func() bool { return len(f.requests("/blobs/"+ld.String())) > 0 }, 10*time.Second, 10*time.Millisecond)
	// The second waits for the first's download, then fetches the blob
	// itself.
	second := pull()
	time.Sleep(200 * time.Millisecond)
	close(slow)
	err := <-first
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.NoError(t, <-second)
	require.Len(t, f.requests("GET /v2/tenant/app/blobs/"+ld.String()), 2)
	got, err := os.ReadFile(filepath.Join(s.Dir(), "blobs", "sha256", ld.Encoded()))
	require.NoError(t, err)
	require.Equal(t, base, got)
}

// A pull cancelled while it holds a blob's download leaves the next pull
// free to fetch it, and no lock file behind.
func TestAttackCancelledHolder(t *testing.T) {
	base := imagetest.Gzip(imagetest.Tar(imagetest.File("etc/base", noise(64<<10))))
	ld := digest.FromBytes(base)
	f := newFakeRegistry(t)
	f.putImage("tenant/app", "1", imagetest.NewImage([][]byte{base}, "/bin/sh"))
	var stalled atomic.Bool
	stalled.Store(true)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, ld.String()) && stalled.Load() {
			w.Header().Set("Content-Length", fmt.Sprint(len(base)))
			w.Write(base[:100])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return true
		}
		return false
	})
	s := newStore(t)
	c := newClient(t, Options{})
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() {
		_, err := c.Pull(ctx1, s, f.host()+"/tenant/app:1", image.ImportOptions{})
		done1 <- err
	}()
	require.Eventually(t, func() bool { return len(f.requests("/blobs/"+ld.String())) > 0 }, 10*time.Second, 10*time.Millisecond)
	done2 := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
		done2 <- err
	}()
	time.Sleep(200 * time.Millisecond)
	stalled.Store(false)
	cancel1()
	require.ErrorIs(t, <-done1, context.Canceled)
	require.NoError(t, <-done2)
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "ingest"))
	require.NoError(t, err)
	require.Empty(t, ents)
}

// A ping answered with a body without end is read no further than a
// manifest would be.
func TestAttackEndlessPingBody(t *testing.T) {
	f := newFakeRegistry(t)
	f.putImage("tenant/app", "1", smallImage("etc/a"))
	var n atomic.Int64
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/" {
			return false
		}
		return endless("/v2/", &n)(w, r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := newClient(t, Options{}).Pull(ctx, newStore(t), f.host()+"/tenant/app:1", image.ImportOptions{Limits: image.Limits{MaxJSONBytes: 64 << 10}})
	t.Logf("pull: %v; the registry wrote %d MiB", err, n.Load()>>20)
	require.Less(t, n.Load(), int64(64<<20), "the ping's body was read to its end")
}

// A registry that answers 503 forever is given up on when the context
// ends, not after the library's retries have slept their fill.
func TestAttackRetriesOutliveTheContext(t *testing.T) {
	f := newFakeRegistry(t)
	f.putImage("tenant/app", "1", smallImage("etc/a"))
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		registryError(w, http.StatusServiceUnavailable, "UNAVAILABLE")
		return true
	})
	s, _ := seeded(t)
	before := storeFiles(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newClient(t, Options{}).Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
	took := time.Since(start)
	t.Logf("after %v: %v", took, err)
	require.Error(t, err)
	require.Less(t, took, 2*time.Second, "the pull outlived its context")
	require.Equal(t, before, storeFiles(t, s))
}

// A manifest trickled a byte at a time, and a token realm that never
// answers, end with the context.
func TestAttackSlowRegistryBoundedByContext(t *testing.T) {
	im := smallImage("etc/a")
	for _, tc := range []struct {
		name string
		hook func(f *fakeRegistry, slow string) func(w http.ResponseWriter, r *http.Request) bool
	}{
		{"manifest a byte at a time", func(f *fakeRegistry, _ string) func(w http.ResponseWriter, r *http.Request) bool {
			return trickle("/manifests/1", im.Manifest(), 100*time.Millisecond)
		}},
		{"ping that never answers", func(f *fakeRegistry, _ string) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/v2/" {
					<-r.Context().Done()
					return true
				}
				return false
			}
		}},
		{"token realm on another loopback port that never answers", func(f *fakeRegistry, slow string) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+slow+`/token",service="x"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				return true
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			f.putImage("tenant/app", "1", im)
			slow := newFakeRegistry(t)
			slow.setHook(func(w http.ResponseWriter, r *http.Request) bool { <-r.Context().Done(); return true })
			f.setHook(tc.hook(f, strings.Replace(slow.URL, "127.0.0.1", "localhost", 1)))
			s, _ := seeded(t)
			before := storeFiles(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			_, err := newClient(t, Options{}).Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
			took := time.Since(start)
			t.Logf("after %v: %v", took, err)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, took, 2*time.Second)
			require.Equal(t, before, storeFiles(t, s))
		})
	}
}

// A mirror that serves other content for a digest is passed over: the
// pull takes the image from the next mirror, and nothing of the lie.
func TestAttackLyingMirror(t *testing.T) {
	liar := newFakeRegistry(t)
	honest := newFakeRegistry(t)
	im := smallImage("etc/busybox")
	md := honest.putImage("library/busybox", "1", im)
	other := smallImage("etc/other")
	liar.putImage("library/busybox", "1", other)
	liar.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", md.String())
		w.Write(other.Manifest())
		return true
	})
	off := newOffLoopback()
	c := newClient(t, Options{Transport: off, Mirrors: map[string][]string{"docker.io": {liar.URL, honest.URL}}})
	s := newStore(t)
	res, err := c.Pull(context.Background(), s, "busybox@"+md.String(), image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, md, res.Images[0].Digest)
	require.Empty(t, off.requests())
	require.Empty(t, liar.requests("/blobs/"))
	list, err := s.List(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Empty(t, list[0].Tags)
}
