package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/imagetest"
)

// fakeRegistry is a read-only OCI distribution registry in the test
// process, which hostile tests bend: documents and blobs by digest, tags,
// a hook that may answer a request first, and the log of requests.
type fakeRegistry struct {
	*httptest.Server
	mu        sync.Mutex
	manifests map[string]fakeDoc // "REPO:TAG" or "REPO@DIGEST"
	blobs     map[digest.Digest][]byte
	hook      func(w http.ResponseWriter, r *http.Request) bool
	log       []string
}

type fakeDoc struct {
	mediaType string
	body      []byte
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	f := &fakeRegistry{manifests: map[string]fakeDoc{}, blobs: map[digest.Digest][]byte{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// setHook sets the hook, for requests from now on.
func (f *fakeRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// host is the registry's HOST:PORT.
func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.URL, "http://") }

// putManifest serves a document under repo by its digest and by each tag.
func (f *fakeRegistry) putManifest(repo, mediaType string, body []byte, tags ...string) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(body)
	f.manifests[repo+"@"+d.String()] = fakeDoc{mediaType, body}
	for _, t := range tags {
		f.manifests[repo+":"+t] = fakeDoc{mediaType, body}
	}
	return d
}

func (f *fakeRegistry) putBlob(b []byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(b)
	f.blobs[d] = b
	return d
}

// putImage serves im under repo:tag.
func (f *fakeRegistry) putImage(repo, tag string, im *imagetest.Image) digest.Digest {
	f.putBlob(im.Config)
	for _, l := range im.Layers {
		f.putBlob(l)
	}
	return f.putManifest(repo, ocispec.MediaTypeImageManifest, im.Manifest(), tag)
}

// requests returns the requests so far that contain s ("/blobs/").
func (f *fakeRegistry) requests(s string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.log {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.log = append(f.log, r.Method+" "+r.URL.Path)
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	p := r.URL.Path
	if p == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if i := strings.LastIndex(p, "/manifests/"); i > 0 && strings.HasPrefix(p, "/v2/") {
		repo, ref := p[len("/v2/"):i], p[i+len("/manifests/"):]
		key := repo + ":" + ref
		if strings.Contains(ref, ":") {
			key = repo + "@" + ref
		}
		f.mu.Lock()
		doc, ok := f.manifests[key]
		f.mu.Unlock()
		if !ok {
			registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
			return
		}
		w.Header().Set("Content-Type", doc.mediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(doc.body).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(doc.body)))
		if r.Method != http.MethodHead {
			w.Write(doc.body)
		}
		return
	}
	if i := strings.LastIndex(p, "/blobs/"); i > 0 {
		d, err := digest.Parse(p[i+len("/blobs/"):])
		f.mu.Lock()
		b, ok := f.blobs[d]
		f.mu.Unlock()
		if err != nil || !ok {
			registryError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Header().Set("Docker-Content-Digest", d.String())
		if r.Method != http.MethodHead {
			w.Write(b)
		}
		return
	}
	registryError(w, http.StatusNotFound, "NAME_UNKNOWN")
}

func registryError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": strings.ToLower(code)}}})
}
