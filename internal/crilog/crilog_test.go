package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

type record struct {
	time            time.Time
	stream, tag, in string
}

// parse reads records as the kubelet does: every line is
// "time stream tag content".
func parse(t *testing.T, out string) []record {
	t.Helper()
	if out == "" {
		return nil
	}
	require.True(t, strings.HasSuffix(out, "\n"), "the output ends with a whole record: %q", out)
	var recs []record
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.SplitN(l, " ", 4)
		require.Len(t, f, 4, "record %q", l)
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		require.NoError(t, err, "record %q", l)
		require.True(t, strings.HasSuffix(f[0], "Z"), "UTC: %q", f[0])
		require.Contains(t, []string{Stdout, Stderr}, f[1])
		require.Contains(t, []string{TagFull, TagPartial}, f[2])
		recs = append(recs, record{ts, f[1], f[2], f[3]})
	}
	return recs
}

func tagsAndContent(recs []record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.tag+":"+r.in)
	}
	return out
}

// chunkings feeds input to write whole, a byte at a time and in random
// pieces: the records never depend on how the output was read.
func chunkings(input string, write func([]byte)) map[string]func() {
	return map[string]func(){
		"whole": func() { write([]byte(input)) },
		"bytes": func() {
			for i := 0; i < len(input); i++ {
				write([]byte{input[i]})
			}
		},
		"random": func() {
			r := rand.New(rand.NewPCG(1, uint64(len(input))))
			for p := input; len(p) > 0; {
				n := min(len(p), 1+r.IntN(13))
				write([]byte(p[:n]))
				p = p[n:]
			}
		},
	}
}

func TestRecords(t *testing.T) {
	const max = 8
	a := func(n int) string { return strings.Repeat("a", n) }
	for name, tc := range map[string]struct {
		in   string
		want []string
	}{
		"full lines":                 {"one\ntwo\n", []string{"F:one", "F:two"}},
		"empty lines":                {"\n\nx\n", []string{"F:", "F:", "F:x"}},
		"no newline at close":        {"one\ntwo", []string{"F:one", "P:two"}},
		"nothing":                    {"", nil},
		"line of the buffer size":    {a(max) + "\n" + a(max) + "\n", []string{"F:" + a(max), "F:" + a(max)}},
		"one byte over":              {a(max+1) + "\n", []string{"P:" + a(max), "F:a"}},
		"twice the size":             {a(2*max) + "\n", []string{"P:" + a(max), "F:" + a(max)}},
		"long line":                  {a(3*max+3) + "\nb\n", []string{"P:" + a(max), "P:" + a(max), "P:" + a(max), "F:aaa", "F:b"}},
		"long line without newline":  {a(2*max + 1), []string{"P:" + a(max), "P:" + a(max), "P:a"}},
		"CRLF":                       {"dos\r\nunix\n", []string{"F:dos", "F:unix"}},
		"CR within a line":           {"a\rb\n\r\r\n", []string{"F:a\rb", "F:\r"}},
		"CRLF at the buffer size":    {a(max) + "\r\n" + a(max-1) + "\r\n", []string{"F:" + a(max), "F:" + a(max-1)}},
		"CR after the buffer size":   {a(max) + "\rb\n", []string{"P:" + a(max), "F:\rb"}},
		"CR ending partial output":   {"ab\r", []string{"P:ab\r"}},
		"CR after a full buffer end": {a(max) + "\r", []string{"P:" + a(max), "P:\r"}},
		"bytes kept as they are":     {"\x00\xff\xfe\xc3\x28\x00\n\xff", []string{"F:\x00\xff\xfe\xc3\x28\x00", "P:\xff"}},
	} {
		for _, how := range []string{"whole", "bytes", "random"} {
			t.Run(name+"/"+how, func(t *testing.T) {
				var out bytes.Buffer
				w := New(&out, nil)
				w.maxLine = max
				s := w.Stream(Stdout)
				chunkings(tc.in, func(p []byte) {
					n, err := s.Write(p)
					require.NoError(t, err)
					require.Equal(t, len(p), n)
				})[how]()
				require.NoError(t, s.Close())
				require.NoError(t, s.Close(), "a second close writes nothing")
				recs := parse(t, out.String())
				assert.Equal(t, tc.want, tagsAndContent(recs))
				for _, r := range recs {
					assert.Equal(t, Stdout, r.stream)
				}
			})
		}
	}
}

// Records carry the stream's name and the default split is containerd's.
func TestStreamsAndDefaultSize(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, nil)
	o, e := w.Stream(Stdout), w.Stream(Stderr)
	_, _ = o.Write([]byte("to out\n"))
	_, _ = e.Write([]byte("to err\n" + strings.Repeat("x", MaxLine+5) + "\n"))
	recs := parse(t, out.String())
	require.Len(t, recs, 4)
	assert.Equal(t, record{recs[0].time, Stdout, TagFull, "to out"}, recs[0])
	assert.Equal(t, record{recs[1].time, Stderr, TagFull, "to err"}, recs[1])
	assert.Equal(t, record{recs[2].time, Stderr, TagPartial, strings.Repeat("x", MaxLine)}, recs[2])
	assert.Equal(t, record{recs[3].time, Stderr, TagFull, "xxxxx"}, recs[3])
	assert.Equal(t, 16384, MaxLine)
}

// A record's time never goes back, even when the clock does.
func TestTimesMonotonic(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, nil)
	base := time.Date(2024, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	steps := []time.Duration{0, time.Second, -time.Hour, 2 * time.Second, -time.Nanosecond, 3 * time.Second}
	i := 0
	w.now = func() time.Time { d := steps[i%len(steps)]; i++; return base.Add(d) }
	o, e := w.Stream(Stdout), w.Stream(Stderr)
	for range 3 {
		_, _ = o.Write([]byte("o\n"))
		_, _ = e.Write([]byte("e\n"))
	}
	recs := parse(t, out.String())
	require.Len(t, recs, 6)
	for j := 1; j < len(recs); j++ {
		require.False(t, recs[j].time.Before(recs[j-1].time), "record %d at %v after %v", j, recs[j].time, recs[j-1].time)
	}
	assert.Equal(t, base.UTC(), recs[0].time)
	assert.Equal(t, base.Add(3*time.Second).UTC(), recs[5].time)
}

// Two streams written at once never mix within a record.
func TestConcurrentStreams(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, nil)
	w.maxLine = 100
	var wg sync.WaitGroup
	for _, st := range []struct{ name, c string }{{Stdout, "o"}, {Stderr, "e"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := w.Stream(st.name)
			r := rand.New(rand.NewPCG(uint64(len(st.c)), 7))
			var in []byte
			for i := range 2000 {
				in = append(in, strings.Repeat(st.c, i%250)+"\n"...)
			}
			for len(in) > 0 {
				n := min(len(in), 1+r.IntN(700))
				_, _ = s.Write(in[:n])
				in = in[n:]
			}
			_ = s.Close()
		}()
	}
	wg.Wait()
	recs := parse(t, out.String())
	count := map[string]int{}
	for _, r := range recs {
		want := map[string]string{Stdout: "o", Stderr: "e"}[r.stream]
		require.Equal(t, strings.Repeat(want, len(r.in)), r.in, "a %s record holds only its stream's bytes", r.stream)
		require.LessOrEqual(t, len(r.in), 100)
		if r.tag == TagFull {
			count[r.stream]++
		}
	}
	assert.Equal(t, map[string]int{Stdout: 2000, Stderr: 2000}, count)
}

// failingWriter fails its writes while fail is set; short cuts the next
// write after n bytes.
type failingWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	fail  error
	short int
	calls int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.short > 0 {
		n := min(f.short, len(p))
		f.short = 0
		f.buf.Write(p[:n])
		return n, syscall.ENOSPC
	}
	if f.fail != nil {
		return 0, f.fail
	}
	return f.buf.Write(p)
}

// A log that cannot be written drops its records and says so once; the
// container's output is taken whole all the same, and records resume when
// the file takes writes again.
func TestWriteFailures(t *testing.T) {
	fw := &failingWriter{}
	var reports []error
	w := New(fw, func(err error) { reports = append(reports, err) })
	s := w.Stream(Stdout)
	write := func(p string) {
		n, err := s.Write([]byte(p))
		require.NoError(t, err, "the container's output never sees the log's failures")
		require.Equal(t, len(p), n)
	}
	write("before\n")
	fw.fail = syscall.EIO
	for range 100 {
		write("lost\n")
	}
	require.Len(t, reports, 1, "reported once")
	require.ErrorIs(t, reports[0], syscall.EIO)
	fw.fail = nil
	write("after\n")
	// A short write (a full disk) cuts a record: the next record starts
	// on a line of its own.
	fw.short = 10
	write("cut-record\n")
	write("whole\n")
	require.Len(t, reports, 2, "the second outage is reported too")
	lines := strings.Split(strings.TrimSuffix(fw.buf.String(), "\n"), "\n")
	require.Len(t, lines, 4, "%q", fw.buf.String())
	assert.Equal(t, []string{"F:before", "F:after"}, tagsAndContent(parse(t, lines[0]+"\n"+lines[1]+"\n")))
	assert.Len(t, lines[2], 10, "the cut record")
	assert.Equal(t, []string{"F:whole"}, tagsAndContent(parse(t, lines[3]+"\n")))
}

// A 10 MB line without a newline is written as MaxLine pieces while it
// streams: memory never holds more than a piece and a write's records.
func TestLongLineBounded(t *testing.T) {
	fw := &failingWriter{}
	w := New(fw, nil)
	s := w.Stream(Stdout)
	chunk := bytes.Repeat([]byte("z"), 32<<10)
	for range (10 << 20) / len(chunk) {
		_, _ = s.Write(chunk)
		require.LessOrEqual(t, cap(s.line), MaxLine+1)
		require.LessOrEqual(t, cap(w.buf), flushSize+2*MaxLine)
	}
	_ = s.Close()
	recs := parse(t, fw.buf.String())
	require.Len(t, recs, (10<<20)/MaxLine)
	for _, r := range recs {
		require.Equal(t, TagPartial, r.tag)
		require.Len(t, r.in, MaxLine)
	}
	assert.LessOrEqual(t, fw.calls, (10<<20)/len(chunk)+1, "a write of the output (and the close) is one write of records")
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	f, err := OpenFile(path)
	require.NoError(t, err)
	_, _ = f.WriteString("one\n")
	f.Close()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640)&^umask(), fi.Mode().Perm())
	f, err = OpenFile(path)
	require.NoError(t, err, "an existing file is appended to")
	_, _ = f.WriteString("two\n")
	f.Close()
	b, _ := os.ReadFile(path)
	assert.Equal(t, "one\ntwo\n", string(b))

	_, err = OpenFile("relative/0.log")
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = OpenFile(dir + "/")
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = OpenFile(filepath.Join(dir, "missing", "0.log"))
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

// What someone planted at the path is refused, without blocking and
// without writing anywhere else.
func TestOpenFilePlanted(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("secret\n"), 0o600))
	plants := map[string]func(p string) error{
		"symlink":          func(p string) error { return os.Symlink(target, p) },
		"dangling symlink": func(p string) error { return os.Symlink(filepath.Join(dir, "nowhere"), p) },
		"FIFO":             func(p string) error { return unix.Mkfifo(p, 0o666) },
		"hard link":        func(p string) error { return os.Link(target, p) },
		"directory":        func(p string) error { return os.Mkdir(p, 0o755) },
		"device":           func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) },
		"socket": func(p string) error {
			l, err := net.Listen("unix", p)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		},
	}
	for name, plant := range plants {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".log")
			if err := plant(p); err != nil {
				t.Skipf("cannot plant a %s: %v", name, err)
			}
			done := make(chan error, 1)
			go func() {
				f, err := OpenFile(p)
				if err == nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				require.Error(t, err)
				assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("OpenFile blocked")
			}
			b, _ := os.ReadFile(target)
			assert.Equal(t, "secret\n", string(b))
			_, err := os.Lstat(filepath.Join(dir, "nowhere"))
			assert.True(t, errors.Is(err, os.ErrNotExist), "nothing was made through the link")
		})
	}
}

// Reopen after the file was moved away (the kubelet's rotation) starts a
// new file at the path; the old one keeps what was written before.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	var reports []error
	w, err := Open(path, func(err error) { reports = append(reports, err) })
	require.NoError(t, err)
	assert.Equal(t, path, w.Path())
	s := w.Stream(Stderr)
	_, _ = s.Write([]byte("first\nhalf-"))
	require.NoError(t, os.Rename(path, path+".20240101"))
	_, _ = s.Write([]byte("done\nsecond\n"))
	require.NoError(t, w.Reopen())
	_, _ = s.Write([]byte("third\n"))

	// A path that cannot be opened any more leaves the writer on the
	// file it has.
	require.NoError(t, os.Rename(path, path+".20240102"))
	require.NoError(t, unix.Mkfifo(path, 0o600))
	err = w.Reopen()
	assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	_, _ = s.Write([]byte("fourth\n"))
	_ = s.Close()
	require.NoError(t, w.Close())
	_, _ = s.Write([]byte("after close\n"))
	err = w.Reopen()
	assert.Error(t, err)
	assert.Empty(t, reports)

	read := func(p string) []string {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		return tagsAndContent(parse(t, string(b)))
	}
	assert.Equal(t, []string{"F:first", "F:half-done", "F:second"}, read(path+".20240101"))
	assert.Equal(t, []string{"F:third", "F:fourth"}, read(path+".20240102"))
	err = New(&bytes.Buffer{}, nil).Reopen()
	assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
}

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}

func ExampleWriter() {
	var out bytes.Buffer
	w := New(&out, nil)
	w.now = func() time.Time { return time.Date(2016, 10, 6, 0, 17, 9, 669794202, time.UTC) }
	s := w.Stream(Stdout)
	_, _ = s.Write([]byte("hello\nworld"))
	_ = s.Close()
	fmt.Print(out.String())
	// Output:
	// 2016-10-06T00:17:09.669794202Z stdout F hello
	// 2016-10-06T00:17:09.669794202Z stdout P world
}
