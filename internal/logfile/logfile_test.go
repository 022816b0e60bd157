package logfile

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func diskUsage(t *testing.T, path string) int64 {
	t.Helper()
	names, err := Files(path)
	require.NoError(t, err)
	var n int64
	for _, name := range names {
		fi, err := os.Stat(name)
		require.NoError(t, err)
		n += fi.Size()
	}
	return n
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	rc, err := Open(path)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

func TestRotationCaps(t *testing.T) {
	for _, files := range []int{1, 2, 3} {
		path := filepath.Join(t.TempDir(), "container.log")
		w, err := Create(path, Limits{MaxSize: 1000, MaxFiles: files})
		require.NoError(t, err)
		var all bytes.Buffer
		for i := 0; i < 500; i++ {
			line := strings.Repeat(string(rune('a'+i%26)), i%37) + "\n"
			all.WriteString(line)
			_, err := w.Write([]byte(line))
			require.NoError(t, err)
			require.LessOrEqual(t, diskUsage(t, path), int64(1000*files))
		}
		big := bytes.Repeat([]byte("z"), 5000)
		_, err = w.Write(big)
		require.NoError(t, err)
		all.Write(big)
		_, err = w.Write([]byte("the-end\n"))
		require.NoError(t, err)
		all.WriteString("the-end\n")
		require.NoError(t, w.Close())

		names, err := Files(path)
		require.NoError(t, err)
		assert.LessOrEqual(t, len(names), files)
		assert.LessOrEqual(t, diskUsage(t, path), int64(1000*files))
		got := readAll(t, path)
		assert.True(t, strings.HasSuffix(all.String(), got), "%d files: the log is the newest output, in order", files)
		assert.True(t, strings.HasSuffix(got, "the-end\n"))
		assert.Greater(t, len(got), 1000*(files-1), "every file but the current one is full")
	}
}

func TestAppendsToExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 10, MaxFiles: 2})
	require.NoError(t, err)
	_, _ = w.Write([]byte("12345678"))
	w.Close()
	w, err = Create(path, Limits{MaxSize: 10, MaxFiles: 2})
	require.NoError(t, err)
	_, _ = w.Write([]byte("abcd"))
	w.Close()
	assert.Equal(t, "12345678abcd", readAll(t, path))
	assert.FileExists(t, path+".1")
}

func TestOpenMissing(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "container.log"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// A pipe held open by a process that outlives the init is cut once idle.
func TestTeeFinishCutsIdlePipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 1 << 20, MaxFiles: 1})
	require.NoError(t, err)
	r, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	var out bytes.Buffer
	tee := NewTee(w)
	tee.Copy(r, &out)
	tee.OnFinish(func() { w.Close() })
	_, _ = pw.Write([]byte("hello\n"))
	start := time.Now()
	tee.Finish(200*time.Millisecond, 0)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, "hello\n", out.String())
	assert.Equal(t, "hello\n", readAll(t, path))
}

// A pipe that a process left behind keeps writing into is never idle: it
// is cut once the total bound passed, and what was copied before is kept.
func TestTeeFinishCutsBusyPipe(t *testing.T) {
	r, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	var out bytes.Buffer
	tee := NewTee(io.Discard)
	tee.Copy(r, &out)
	_, err = pw.Write([]byte("first\n"))
	require.NoError(t, err)
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := pw.Write([]byte("x\n")); err != nil {
				return
			}
		}
	}()
	tee.Finish(time.Hour, 300*time.Millisecond)
	close(stop)
	<-wrote
	assert.True(t, strings.HasPrefix(out.String(), "first\n"), out.String())
}

// closeRecorder is a side writer that records what it got and its close.
type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// CopyAlso writes what it copies to its side writer too, which it closes
// when the pipe ends, also when the caller's writer broke first.
func TestTeeCopyAlso(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 1 << 20, MaxFiles: 1})
	require.NoError(t, err)
	tee := NewTee(w)
	r1, pw1, err := os.Pipe()
	require.NoError(t, err)
	r2, pw2, err := os.Pipe()
	require.NoError(t, err)
	var out bytes.Buffer
	side1, side2 := &closeRecorder{}, &closeRecorder{}
	tee.CopyAlso(r1, &out, side1)
	tee.CopyAlso(r2, brokenWriter{}, side2)
	tee.OnFinish(func() { w.Close() })
	_, _ = pw1.Write([]byte("one\n"))
	_, _ = pw2.Write([]byte("two\n"))
	pw1.Close()
	pw2.Close()
	tee.Finish(time.Minute, 0) // the pipes end first
	assert.Equal(t, "one\n", out.String())
	assert.Equal(t, "one\n", side1.String())
	assert.Equal(t, "two\n", side2.String())
	assert.True(t, side1.closed)
	assert.True(t, side2.closed)
	assert.Contains(t, readAll(t, path), "one\n")
	assert.Contains(t, readAll(t, path), "two\n")
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 5, "a\nb\n"},
		{"a\nb\n", -1, "a\nb\n"},
		{"a\nb\n", 0, ""},
		{"", 3, ""},
	} {
		var out bytes.Buffer
		require.NoError(t, Tail(strings.NewReader(tc.in), tc.n, &out))
		assert.Equal(t, tc.want, out.String(), "%q tail %d", tc.in, tc.n)
	}
}

// Follow copies the tail, then what is written next across rotations, and
// ends once the writer is done and everything was copied.
func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 1024, MaxFiles: 2})
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		_, _ = w.Write([]byte("old-" + string(rune('0'+i)) + "\n"))
	}
	done := make(chan struct{})
	var out fixture.SyncBuffer
	errc := make(chan error, 1)
	go func() { errc <- Follow(context.Background(), path, 2, &out, done) }()
	// Follow's first read is done before the new output comes.
	time.Sleep(300 * time.Millisecond)
	var want strings.Builder
	want.WriteString("old-8\nold-9\n")
	for i := 0; i < 200; i++ {
		line := "new-" + strings.Repeat("x", i%20) + "\n"
		want.WriteString(line)
		_, _ = w.Write([]byte(line))
		if i%20 == 0 {
			// Less than a file between two polls: nothing is lost.
			time.Sleep(2 * pollInterval)
		}
	}
	w.Close()
	close(done)
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not end")
	}
	assert.Equal(t, want.String(), out.String())
	names, err := Files(path)
	require.NoError(t, err)
	assert.Len(t, names, 2, "the log rotated while followed")
}

// With one file, rotation truncates the file being followed: Follow starts
// over at its beginning instead of waiting for it to grow past where it
// was.
func TestFollowOneFileTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 4096, MaxFiles: 1})
	require.NoError(t, err)
	done := make(chan struct{})
	var out fixture.SyncBuffer
	errc := make(chan error, 1)
	go func() { errc <- Follow(context.Background(), path, -1, &out, done) }()
	_, _ = w.Write([]byte(strings.Repeat("x", 3000) + "\n"))
	time.Sleep(3 * pollInterval)
	_, _ = w.Write([]byte(strings.Repeat("y", 2000) + "\n")) // past the cap: the file starts over
	time.Sleep(3 * pollInterval)
	_, _ = w.Write([]byte("after the rotation\n"))
	time.Sleep(3 * pollInterval)
	w.Close()
	close(done)
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not end")
	}
	require.Contains(t, out.String(), "after the rotation\n")
}

// A log opened with fewer files than it was written with drops the
// rotated files beyond its limits: it never holds more than its cap.
func TestCreateDropsFilesBeyondLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, Limits{MaxSize: 4096, MaxFiles: 4})
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		_, _ = w.Write([]byte(strings.Repeat("x", 1000) + "\n"))
	}
	require.NoError(t, w.Close())
	names, err := Files(path)
	require.NoError(t, err)
	require.Len(t, names, 4)
	w, err = Create(path, Limits{MaxSize: 4096, MaxFiles: 2})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	names, err = Files(path)
	require.NoError(t, err)
	require.Equal(t, []string{path + ".1", path}, names)
}
