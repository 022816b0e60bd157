package runtimetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime"
)

// CRIRecord is one line of a CRI log file, as the kubelet reads it.
type CRIRecord struct {
	Time    time.Time
	Stream  string // stdout or stderr
	Tag     string // F or P
	Content string
}

// ReadCRILog reads the CRI log file at path as the kubelet does, checking
// every line's form: "<RFC 3339 time> <stream> <tag> <content>".
func ReadCRILog(t *testing.T, path string) []CRIRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return ParseCRILog(t, b)
}

// ParseCRILog is ReadCRILog of the file's bytes. A last line without its
// newline (a record being written) is left out.
func ParseCRILog(t *testing.T, b []byte) []CRIRecord {
	t.Helper()
	var recs []CRIRecord
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		line := string(b[:i])
		b = b[i+1:]
		f := strings.SplitN(line, " ", 4)
		require.Len(t, f, 4, "CRI log record %q", line)
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		require.NoError(t, err, "CRI log record %q", line)
		require.Contains(t, []string{"stdout", "stderr"}, f[1], "CRI log record %q", line)
		require.Contains(t, []string{"F", "P"}, f[2], "CRI log record %q", line)
		recs = append(recs, CRIRecord{ts, f[1], f[2], f[3]})
	}
	return recs
}

// streamRecords lists the records of one stream as "tag:content".
func streamRecords(recs []CRIRecord, stream string) []string {
	var out []string
	for _, r := range recs {
		if r.Stream == stream {
			out = append(out, r.Tag+":"+r.Content)
		}
	}
	return out
}

// waitCRILog polls the CRI log at path until done says its records are
// all there.
func waitCRILog(ctx context.Context, t *testing.T, path string, done func([]CRIRecord) bool) []CRIRecord {
	t.Helper()
	for {
		var recs []CRIRecord
		if b, err := os.ReadFile(path); err == nil {
			recs = ParseCRILog(t, b)
			if done(recs) {
				return recs
			}
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(path)
			t.Fatalf("waiting for the CRI log %s: %v; it holds %q", path, ctx.Err(), b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func hasRecord(recs []CRIRecord, stream, tag, content string) bool {
	for _, r := range recs {
		if r.Stream == stream && r.Tag == tag && r.Content == content {
			return true
		}
	}
	return false
}

// criLogDir is a directory for CRI logs, as the kubelet makes one a pod.
func criLogDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "pods", "ns_pod_uid", "ctr")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// A container's output goes to its CRI log, each stream's lines tagged,
// besides the kept log and the caller's writers; ReopenLog after the file
// was moved away (the kubelet's rotation) starts a new file at the path
// before it returns, from another runtime on the same state too.
func testCRILog(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	path := filepath.Join(criLogDir(t), "0.log")
	script := `echo out-1; echo err-1 >&2; printf 'crlf\r\n'; head -c 40000 /dev/zero | tr '\0' a; echo; printf no-newline-yet;
trap 'printf " then newline\n"; echo out-2; echo err-2 >&2; printf tail-without-newline; exit 0' USR1
sleep 1000 & wait`
	cfg := h.Config(t, "/bin/sh", "-c", script)
	cfg.CRILog = path
	if !rt.Capabilities().CRILog {
		_, err := rt.Create(ctx, NewID("crilog"), cfg)
		require.Truef(t, isNotImplemented(err), "a CRI log without the capability: %v", err)
		t.Skip("backend writes no CRI logs")
	}
	// One writer for both streams: the caller gets them together, the
	// CRI log tells them apart.
	out := newBuffer()
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("crilog"), cfg)
	require.NoError(t, c.Start(ctx))
	a := strings.Repeat("a", 16384)
	recs := waitCRILog(ctx, t, path, func(r []CRIRecord) bool {
		return hasRecord(r, "stderr", "F", "err-1") && hasRecord(r, "stdout", "F", strings.Repeat("a", 40000-2*16384))
	})
	require.Equal(t, []string{"F:out-1", "F:crlf", "P:" + a, "P:" + a, "F:" + strings.Repeat("a", 40000-2*16384)}, streamRecords(recs, "stdout"))
	require.Equal(t, []string{"F:err-1"}, streamRecords(recs, "stderr"))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm()&0o660, "mode 0640 (less the umask)")

	// The kubelet's rotation: rename, then reopen, from another
	// runtime on the same state.
	rotated := path + ".20240101-000000"
	require.NoError(t, os.Rename(path, rotated))
	rt2 := h.Reopen(t, rt)
	c2, err := rt2.Get(ctx, c.ID())
	require.NoError(t, err)
	require.NoError(t, c2.ReopenLog(ctx))
	_, err = os.Stat(path)
	require.NoError(t, err, "the new file exists once ReopenLog returns")
	require.NoError(t, c2.ReopenLog(ctx), "a reopen without a rotation keeps the file")

	require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, es.Code)
	recs = ReadCRILog(t, path)
	require.Equal(t, []string{"F:no-newline-yet then newline", "F:out-2", "P:tail-without-newline"}, streamRecords(recs, "stdout"))
	require.Equal(t, []string{"F:err-2"}, streamRecords(recs, "stderr"))
	old := ReadCRILog(t, rotated)
	require.Len(t, old, 6, "the rotated file keeps what was written before, no more")
	for i := 1; i < len(old); i++ {
		require.False(t, old[i].Time.Before(old[i-1].Time), "times never go back")
	}
	require.True(t, old[len(old)-1].Time.Before(recs[0].Time) || old[len(old)-1].Time.Equal(recs[0].Time))

	// The kept log and the caller's writer got it all as before (the
	// streams in their own order each: they come through pipes of their
	// own).
	got := strings.ReplaceAll(out.String(), strings.Repeat("a", 40000), "<a*40000>")
	require.Contains(t, got, "err-1\n")
	require.Contains(t, got, "err-2\n")
	got = strings.ReplaceAll(strings.ReplaceAll(got, "err-1\n", ""), "err-2\n", "")
	require.Equal(t, "out-1\ncrlf\r\n<a*40000>\nno-newline-yet then newline\nout-2\ntail-without-newline", got)
	if rt.Capabilities().Logs {
		rc, err := c.Logs(ctx)
		require.NoError(t, err)
		kept, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.Contains(t, string(kept), "out-1\n")
		require.Contains(t, string(kept), "err-2\n")
		require.NotContains(t, string(kept), " stdout F ", "the kept log is not in the CRI format")
	}

	// Only a running container's log is reopened.
	err = c2.ReopenLog(ctx)
	require.Truef(t, isFailedPrecondition(err), "reopen of a stopped container: %v", err)
	c3 := create(t, rt, NewID("crilog-none"), h.Config(t, "/bin/sleep", "1000"))
	err = c3.ReopenLog(ctx)
	require.Truef(t, isFailedPrecondition(err), "reopen of a created container: %v", err)
	require.NoError(t, c3.Start(ctx))
	err = c3.ReopenLog(ctx)
	require.Truef(t, isFailedPrecondition(err), "reopen of a container without a CRI log: %v", err)
}

// What a tenant writes cannot break the CRI log: a line of 10 MB without a
// newline is split as it streams, two streams flooding at once never mix
// within a record, and any bytes are kept as they are.
func testCRILogHostile(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().CRILog {
		t.Skip("backend writes no CRI logs")
	}
	const lines = 100000
	path := filepath.Join(criLogDir(t), "0.log")
	script := fmt.Sprintf(`printf '\377\376\000nul\tbyte \303\050\n'
head -c 10000000 /dev/zero | tr '\0' x; echo
yes flood-out | head -n %d & yes flood-err | head -n %d >&2 & wait
printf end`, lines, lines)
	cfg := h.Config(t, "/bin/sh", "-c", script)
	cfg.CRILog = path
	c := create(t, rt, NewID("crilog-hostile"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, es.Code)
	recs := ReadCRILog(t, path)
	var out, errs []CRIRecord
	for _, r := range recs {
		if r.Stream == "stdout" {
			out = append(out, r)
		} else {
			errs = append(errs, r)
		}
	}
	require.NotEmpty(t, out)
	require.Equal(t, CRIRecord{out[0].Time, "stdout", "F", "\xff\xfe\x00nul\tbyte \xc3\x28"}, out[0], "bytes kept as they are")
	out = out[1:]
	const piece = 16384
	long := 0
	for len(out) > 0 && out[0].Content != "flood-out" {
		r := out[0]
		require.LessOrEqual(t, len(r.Content), piece)
		require.Equal(t, strings.Repeat("x", len(r.Content)), r.Content)
		if r.Tag == "P" {
			require.Len(t, r.Content, piece)
		}
		long += len(r.Content)
		out = out[1:]
		if r.Tag == "F" {
			break
		}
	}
	require.Equal(t, 10000000, long, "the long line, in pieces")
	require.Len(t, out, lines+1)
	for _, r := range out[:lines] {
		require.Equal(t, "F:flood-out", r.Tag+":"+r.Content)
	}
	require.Equal(t, "P:end", out[lines].Tag+":"+out[lines].Content)
	require.Len(t, errs, lines)
	for _, r := range errs {
		require.Equal(t, "F:flood-err", r.Tag+":"+r.Content)
	}
}

// What someone planted at the CRI log's path is never followed nor opened:
// a symbolic link or a FIFO there refuses the create (failed-precondition)
// without blocking and without writing through it.
func testCRILogPlanted(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().CRILog {
		t.Skip("backend writes no CRI logs")
	}
	dir := criLogDir(t)
	target := filepath.Join(t.TempDir(), "target")
	require.NoError(t, os.WriteFile(target, []byte("host file\n"), 0o600))
	plants := map[string]func(string) error{
		"symlink": func(p string) error { return os.Symlink(target, p) },
		"FIFO":    func(p string) error { return unix.Mkfifo(p, 0o666) },
	}
	for name, plant := range plants {
		path := filepath.Join(dir, name+".log")
		require.NoError(t, plant(path))
		cfg := h.Config(t, "/bin/echo", "hello")
		cfg.CRILog = path
		id := NewID("crilog-planted")
		start := time.Now()
		_, err := rt.Create(ctx, id, cfg)
		require.Truef(t, isFailedPrecondition(err), "create over a planted %s: %v", name, err)
		require.Less(t, time.Since(start), timeout/2, "a planted %s does not block", name)
		_, err = rt.Get(ctx, id)
		require.Truef(t, isNotFound(err), "a refused create leaves no container: %v", err)
		require.Empty(t, h.Leftovers(t, rt, id))
	}
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "host file\n", string(b))
}
