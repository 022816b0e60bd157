package registry

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
)

// TestHelperPull is a pull in a process of its own, for tests to kill:
// BERTH_PULL_STORE, BERTH_PULL_REF.
func TestHelperPull(t *testing.T) {
	dir, ref := os.Getenv("BERTH_PULL_STORE"), os.Getenv("BERTH_PULL_REF")
	if dir == "" {
		t.Skip("run by TestKilledPull")
	}
	s, err := image.Open(dir)
	require.NoError(t, err)
	_, err = newClient(t, Options{}).Pull(context.Background(), s, ref, image.ImportOptions{})
	require.NoError(t, err)
}

// A pull killed half-way through a layer, while it holds the layer's
// download lock: a concurrent pull of the same image goes on and
// downloads it itself, and the next Open removes what the killed one
// staged.
func TestKilledPull(t *testing.T) {
	f := newFakeRegistry(t)
	layer := imagetest.Gzip(imagetest.Tar(imagetest.File("big", noise(4<<20))))
	im := imagetest.NewImage([][]byte{layer}, "/bin/sh")
	f.putImage("tenant/app", "1", im)
	ld := digest.FromBytes(layer).String()
	var first atomic.Bool
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ld) || r.Method != http.MethodGet || !first.CompareAndSwap(false, true) {
			return false
		}
		// The first download stalls half-way.
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
		w.Write(layer[:len(layer)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	dir := filepath.Join(t.TempDir(), "store")
	s, err := image.Open(dir)
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPull$")
	cmd.Env = append(os.Environ(), "BERTH_PULL_STORE="+dir, "BERTH_PULL_REF="+f.host()+"/tenant/app:1")
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(20 * time.Second)
	for !first.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.True(t, first.Load(), "the helper never asked for the layer")
	time.Sleep(200 * time.Millisecond) // it holds the lock and has staged half

	done := make(chan error, 1)
	go func() {
		_, err := newClient(t, Options{}).Pull(context.Background(), s, f.host()+"/tenant/app:1", image.ImportOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the second pull did not wait for the first one's download: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.NoError(t, <-done)
	require.Len(t, f.requests("GET /v2/tenant/app/blobs/"+ld), 2)

	// What the killed pull staged goes at the next Open.
	left, err := os.ReadDir(filepath.Join(dir, "ingest"))
	require.NoError(t, err)
	require.NotEmpty(t, left, "the killed pull staged nothing")
	_, err = image.Open(dir)
	require.NoError(t, err)
	left, err = os.ReadDir(filepath.Join(dir, "ingest"))
	require.NoError(t, err)
	assert.Empty(t, left)
	require.NoError(t, validate.Store(dir))
	_, err = s.Remove(context.Background(), f.host()+"/tenant/app:1")
	require.NoError(t, err)
	list, err := s.List(context.Background())
	require.NoError(t, err)
	assert.Empty(t, list)
}
