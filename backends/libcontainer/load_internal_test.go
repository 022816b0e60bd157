package libcontainer

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// A cache keeps at most fileCacheMax files, whether they were read (get)
// or written by the caller (put, as every create does with its record): a
// program creating thousands of containers does not keep them all.
func TestFileCacheBounded(t *testing.T) {
	dir := t.TempDir()
	var c fileCache[int]
	for i := range fileCacheMax + 100 {
		p := filepath.Join(dir, strconv.Itoa(i))
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o600))
		if i%2 == 0 {
			c.put(p, i)
		} else {
			v, err := c.get(p, func() (int, error) { return i, nil })
			require.NoError(t, err)
			require.Equal(t, i, v)
		}
		require.LessOrEqual(t, c.len(), fileCacheMax)
	}
	require.Equal(t, fileCacheMax, c.len())

	// What it keeps is still handed out, and a changed file is read anew.
	p := filepath.Join(dir, strconv.Itoa(fileCacheMax+99))
	v, err := c.get(p, func() (int, error) { return -1, nil })
	require.NoError(t, err)
	require.Equal(t, fileCacheMax+99, v)
	require.NoError(t, os.WriteFile(p, []byte("changed"), 0o600))
	v, err = c.get(p, func() (int, error) { return -1, nil })
	require.NoError(t, err)
	require.Equal(t, -1, v)
}

// len is how many files c keeps.
func (c *fileCache[T]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
