package cri

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/internal/fsutil"
)

// sandbox is what the server keeps of a pod beyond its infra container:
// the kubelet's config and what the server did for it.
type sandbox struct {
	ID      string          `json:"id"`
	Handler string          `json:"handler"`
	Config  json.RawMessage `json:"config"`
	Created time.Time       `json:"created"`
	// Stopped is set once StopPodSandbox ran: the pod's containers and
	// infra are stopped and its network is torn down.
	Stopped bool `json:"stopped,omitempty"`
	// IPs are the pod's addresses from CNI, the primary first.
	IPs []string `json:"ips,omitempty"`
	// NetNS is the path the network was set up in (kept for its
	// teardown), empty for a pod on the host's network.
	NetNS string `json:"netns,omitempty"`

	mu  sync.Mutex // serializes the pod's lifecycle calls
	cfg *cri.PodSandboxConfig
	// fmu guards Stopped against readers that do not take mu (a status
	// must not wait for a stop).
	fmu sync.Mutex
}

func (sb *sandbox) stopped() bool {
	sb.fmu.Lock()
	defer sb.fmu.Unlock()
	return sb.Stopped
}

// setStopped marks the pod stopped; the caller holds sb.mu.
func (sb *sandbox) setStopped() {
	sb.fmu.Lock()
	defer sb.fmu.Unlock()
	sb.Stopped = true
}

// container is what the server keeps of a container beyond the runtime's
// record.
type container struct {
	ID        string          `json:"id"`
	SandboxID string          `json:"sandbox"`
	Config    json.RawMessage `json:"config"`
	// Image is the image ID (config digest); ImageRef the manifest digest
	// it ran from.
	Image    string    `json:"image"`
	ImageRef string    `json:"image_ref"`
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	// LogPath is the host path of the container's CRI log, or "".
	LogPath string `json:"log_path,omitempty"`

	mu  sync.Mutex // serializes the container's lifecycle calls
	cfg *cri.ContainerConfig
	// fmu guards Started against readers that do not take mu.
	fmu sync.Mutex
	// emu is held by a start from before the runtime's start until its
	// event is published, so that the stop of a container that exits at
	// once is published after it.
	emu sync.Mutex
}

func (c *container) started() time.Time {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.Started
}

// setStarted records the start; the caller holds c.mu.
func (c *container) setStarted(t time.Time) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.Started = t
}

// state holds the server's records, in memory and in a directory (one
// JSON file per object, written atomically), so that a restarted server
// knows its pods and containers again.
type state struct {
	dir string

	mu         sync.Mutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	names      map[string]string // reserved names → ID
}

func openState(dir string) (*state, error) {
	s := &state{dir: dir, sandboxes: map[string]*sandbox{}, containers: map[string]*container{}, names: map[string]string{}}
	for _, sub := range []string{"sandboxes", "containers"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := s.load("sandboxes", func(data []byte) error {
		var sb sandbox
		if err := json.Unmarshal(data, &sb); err != nil {
			return err
		}
		sb.cfg = &cri.PodSandboxConfig{}
		if err := protojson.Unmarshal(sb.Config, sb.cfg); err != nil {
			return err
		}
		s.sandboxes[sb.ID] = &sb
		s.names[sandboxName(sb.cfg.GetMetadata())] = sb.ID
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.load("containers", func(data []byte) error {
		var c container
		if err := json.Unmarshal(data, &c); err != nil {
			return err
		}
		c.cfg = &cri.ContainerConfig{}
		if err := protojson.Unmarshal(c.Config, c.cfg); err != nil {
			return err
		}
		s.containers[c.ID] = &c
		s.names[containerName(c.SandboxID, c.cfg.GetMetadata())] = c.ID
		return nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads every record of a kind; a record that cannot be read (a
// crash while it was written leaves none: writes are atomic) is an error.
func (s *state) load(kind string, add func([]byte) error) error {
	entries, err := os.ReadDir(filepath.Join(s.dir, kind))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, kind, e.Name()))
		if err != nil {
			return err
		}
		if err := add(data); err != nil {
			return fmt.Errorf("state %s/%s: %w", kind, e.Name(), err)
		}
	}
	return nil
}

func (s *state) path(kind, id string) string { return filepath.Join(s.dir, kind, id+".json") }

// saveSandbox writes sb's record; the caller holds sb.mu (or sb is not
// shared yet).
func (s *state) saveSandbox(sb *sandbox) error {
	data, err := protojson.Marshal(sb.cfg)
	if err != nil {
		return err
	}
	sb.fmu.Lock()
	defer sb.fmu.Unlock()
	sb.Config = data
	return fsutil.WriteJSON(s.path("sandboxes", sb.ID), sb)
}

// saveContainer writes c's record; the caller holds c.mu (or c is not
// shared yet).
func (s *state) saveContainer(c *container) error {
	data, err := protojson.Marshal(c.cfg)
	if err != nil {
		return err
	}
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.Config = data
	return fsutil.WriteJSON(s.path("containers", c.ID), c)
}

// sandboxName and containerName are the names the CRI requires to be
// unique, as the kubelet builds them.
func sandboxName(m *cri.PodSandboxMetadata) string {
	return fmt.Sprintf("pod/%s/%s/%s/%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}

func containerName(sandboxID string, m *cri.ContainerMetadata) string {
	return fmt.Sprintf("container/%s/%s/%d", sandboxID, m.GetName(), m.GetAttempt())
}

// reserve claims name for id: already-exists while another object holds
// it.
func (s *state) reserve(name, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.names[name]; ok && other != id {
		return fmt.Errorf("name %q is reserved for %s: %w", name, other, errdefs.ErrAlreadyExists)
	}
	s.names[name] = id
	return nil
}

// release frees name if id holds it.
func (s *state) release(name, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[name] == id {
		delete(s.names, name)
	}
}

func (s *state) addSandbox(sb *sandbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sandboxes[sb.ID] = sb
}

func (s *state) addContainer(c *container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.containers[c.ID] = c
}

// removeSandbox forgets sb: its record, then its name.
func (s *state) removeSandbox(sb *sandbox) error {
	if err := os.Remove(s.path("sandboxes", sb.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.mu.Lock()
	delete(s.sandboxes, sb.ID)
	s.mu.Unlock()
	s.release(sandboxName(sb.cfg.GetMetadata()), sb.ID)
	return nil
}

// removeContainer forgets c.
func (s *state) removeContainer(c *container) error {
	if err := os.Remove(s.path("containers", c.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.mu.Lock()
	delete(s.containers, c.ID)
	s.mu.Unlock()
	s.release(containerName(c.SandboxID, c.cfg.GetMetadata()), c.ID)
	return nil
}

// sandbox finds a pod by its ID or a unique prefix of it, as crictl
// lets users type.
func (s *state) sandbox(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := find(s.sandboxes, id)
	if err != nil {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, err)
	}
	return sb, nil
}

// container finds a container by its ID or a unique prefix.
func (s *state) container(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := find(s.containers, id)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", id, err)
	}
	return c, nil
}

func find[T any](m map[string]*T, id string) (*T, error) {
	if id == "" {
		return nil, fmt.Errorf("no ID given: %w", errdefs.ErrNotFound)
	}
	if v, ok := m[id]; ok {
		return v, nil
	}
	var found *T
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, id) {
			found = v
			n++
		}
	}
	switch n {
	case 0:
		return nil, errdefs.ErrNotFound
	case 1:
		return found, nil
	}
	return nil, fmt.Errorf("the prefix names %d objects: %w", n, errdefs.ErrInvalidArgument)
}

// listSandboxes and listContainers return the records held now.
func (s *state) listSandboxes() []*sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		out = append(out, sb)
	}
	return out
}

func (s *state) listContainers() []*container {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		out = append(out, c)
	}
	return out
}

// newID returns a fresh 64-hex-digit ID, as the kubelet expects.
func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
