package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vbauerster/mpb/v8"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
	"github.com/berthrun/berth/internal/fixture"
)

// TestProgressNotATerminal: no bars, and no callbacks, when stderr is a
// pipe or a file.
func TestProgressNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer f.Close()
	for _, stderr := range []*os.File{w, f} {
		p := (&app{stderr: stderr}).progress()
		require.Nil(t, p, stderr.Name())
		assert.Nil(t, p.onBlob())
		assert.Nil(t, p.onRead("x"))
		p.stop(true)
	}
}

func testProgress(out *fixture.SyncBuffer) *progress {
	return newProgress(mpb.WithOutput(out), mpb.WithWidth(120), mpb.WithAutoRefresh(), mpb.WithRefreshRate(5*time.Millisecond))
}

// TestProgressBlobs drives the registry adapter as a pull does, from
// several goroutines: a bar per digest, completed when its blob is
// through, aborted when it failed, a new one when it is sent again.
func TestProgressBlobs(t *testing.T) {
	var out fixture.SyncBuffer
	p := testProgress(&out)
	blobs := map[digest.Digest]int64{}
	for _, s := range []string{"a", "b", "c", "d"} {
		blobs[digest.FromString(s)] = 3 << 20
	}
	failed := digest.FromString("d")
	var wg sync.WaitGroup
	for d, size := range blobs {
		wg.Go(func() {
			end := size
			if d == failed {
				end = size / 2
			}
			for done := int64(0); done < end; done += 64 << 10 {
				p.blob(registry.Progress{Digest: d, Size: size, Done: done})
			}
			p.blob(registry.Progress{Digest: d, Size: size, Done: end})
			p.blob(registry.Progress{Digest: d, Size: size, Done: end, Finished: true, Failed: d == failed})
		})
	}
	wg.Wait()
	p.mu.Lock()
	require.Len(t, p.all, 4, "one bar per blob")
	for d := range blobs {
		assert.True(t, p.blobs[d].ended, "%s: its bar ended on Finished", d)
	}
	retried := p.blobs[failed]
	p.mu.Unlock()

	// The failed blob is sent again: a new bar, the old one stays.
	p.blob(registry.Progress{Digest: failed, Size: 3 << 20, Done: 1 << 20})
	p.mu.Lock()
	require.Len(t, p.all, 5)
	assert.NotSame(t, retried, p.blobs[failed])
	assert.False(t, p.blobs[failed].ended)
	p.mu.Unlock()
	p.stop(true)
	p.stop(true)
	p.blob(registry.Progress{Digest: digest.FromString("late"), Size: 1})
	assert.Len(t, p.all, 5, "no bar once stopped")

	for _, b := range p.all[:4] {
		assert.True(t, b.b.Aborted() != b.b.Completed())
	}
	assert.True(t, retried.b.Aborted(), "a blob that failed is left where it stopped")
	assert.True(t, p.blobs[failed].b.Completed(), "stop(true) completes the bars still running")
	text := out.String()
	for d := range blobs {
		assert.Contains(t, text, blobName(d))
	}
	assert.Equal(t, 12, len(blobName(failed)))
	assert.Contains(t, text, "3.0 MiB / 3.0 MiB")
	assert.Contains(t, text, "/s")
}

// TestProgressRead: one bar for an archive, of its size when known.
func TestProgressRead(t *testing.T) {
	for _, total := range []int64{0, 5 << 20} {
		var out fixture.SyncBuffer
		p := testProgress(&out)
		fn := p.onRead("importing x.tar")
		for n := int64(0); n <= 5<<20; n += 1 << 20 {
			fn(image.ImportProgress{Read: n, Total: total})
		}
		p.stop(true)
		require.Len(t, p.all, 1)
		assert.True(t, p.all[0].b.Completed())
		text := out.String()
		assert.Contains(t, text, "importing x.tar")
		if total > 0 {
			assert.Contains(t, text, "5.0 MiB / 5.0 MiB")
		} else {
			assert.Contains(t, text, "5.0 MiB")
			assert.NotContains(t, text, "/ 0")
		}
	}
	// A failed import leaves its bar where it stopped.
	var out fixture.SyncBuffer
	p := testProgress(&out)
	p.onRead("importing y.tar")(image.ImportProgress{Read: 1 << 20, Total: 4 << 20})
	p.stop(false)
	assert.True(t, p.all[0].b.Aborted())
	assert.True(t, strings.Contains(out.String(), "1.0 MiB / 4.0 MiB"), out.String())
}
