package docker

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// A tenant's sparse file takes no space in the container's layer, but the
// export carries it as that many zeros: the temporary file berth keeps the
// export in on the host must not take them on the host's disk (truncate -s
// 1T would fill it). Both ways of archiving: the daemon's export, and
// berth's archive of the layers for a container in the host's user
// namespace on a userns-remap daemon.
func TestSnapshotSparseFileTakesNoHostDisk(t *testing.T) {
	for _, host := range []string{plainHost, usernsHost} {
		t.Run(filepath.Base(host), func(t *testing.T) {
			requireDaemon(t, host)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			h := &harness{host: host}
			rt := h.Open(t)
			const size = 2 << 30
			var out fixture.SyncBuffer
			cfg := h.Config(t, "/bin/sh", "-c", "truncate -s 2G /sparse && echo ready && sleep 1000")
			cfg.IO = runtime.IO{Stdout: &out, Stderr: &out}
			c, err := rt.Create(ctx, runtimetest.NewID("sparse"), cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
			require.NoError(t, c.Start(ctx))
			fixture.Eventually(t, func() bool { return strings.Contains(out.String(), "ready") }, time.Minute, 20*time.Millisecond, out.String)

			// The most host disk any snapshot temporary file held.
			var most atomic.Int64
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for {
					names, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-docker-snapshot-*"))
					for _, n := range names {
						var st unix.Stat_t
						if unix.Stat(n, &st) == nil && st.Blocks*512 > most.Load() {
							most.Store(st.Blocks * 512)
						}
					}
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			}()
			var n countWriter
			err = c.Snapshot(ctx, &n)
			close(stop)
			<-watched
			require.NoError(t, err)
			require.Greater(t, int64(n), int64(size), "the archive carries the sparse file's zeros")
			require.Less(t, most.Load(), int64(256<<20), "the temporary file took the zeros on the host's disk")
		})
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

var _ io.Writer = (*countWriter)(nil)
