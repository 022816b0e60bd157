package logfile

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Each attachment gets the output written after it joined, stream by
// stream; one that falls behind is dropped alone, and writing never
// blocks on it.
func TestFanout(t *testing.T) {
	f := NewFanout()
	out, errs := f.Stream(1), f.Stream(2)
	_, _ = out.Write([]byte("before"))
	fast, ok := f.Join(100)
	require.True(t, ok)
	slow, ok := f.Join(10)
	require.True(t, ok)
	_, _ = out.Write([]byte("one"))
	_, _ = errs.Write([]byte("two"))
	chunks, ended, dropped := fast.Take()
	require.Equal(t, []Chunk{{1, []byte("one")}, {2, []byte("two")}}, chunks)
	require.False(t, ended || dropped)
	select {
	case <-slow.Ready():
	default:
		t.Fatal("a write signals the attachment")
	}

	// slow takes nothing: its queue overflows, and it alone is dropped.
	_, _ = out.Write([]byte("0123456789"))
	chunks, ended, dropped = slow.Take()
	require.Empty(t, chunks)
	require.True(t, dropped)
	require.False(t, ended)
	chunks, _, dropped = fast.Take()
	require.False(t, dropped)
	require.Equal(t, []Chunk{{1, []byte("0123456789")}}, chunks)

	gone, ok := f.Join(100)
	require.True(t, ok)
	gone.Leave()
	_, _ = out.Write([]byte("after-leave"))
	chunks, _, dropped = gone.Take()
	require.Empty(t, chunks)
	require.True(t, dropped)

	// The output ends with its last stream; what was queued comes first.
	require.NoError(t, out.Close())
	_, _ = errs.Write([]byte("last"))
	chunks, ended, _ = fast.Take()
	require.False(t, ended)
	require.Equal(t, []Chunk{{1, []byte("after-leave")}, {2, []byte("last")}}, chunks)
	require.NoError(t, errs.Close())
	require.NoError(t, errs.Close(), "a second close changes nothing")
	chunks, ended, dropped = fast.Take()
	require.Empty(t, chunks)
	require.True(t, ended)
	require.False(t, dropped)
	_, ok = f.Join(100)
	require.False(t, ok, "nothing to join once the output ended")
}
