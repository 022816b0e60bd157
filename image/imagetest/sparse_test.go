package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// Go's tar reader expands what SparseTar writes: the entry stands for
// more bytes than the archive carries.
func TestSparseTar(t *testing.T) {
	tr := tar.NewReader(bytes.NewReader(SparseTar("big", "abcd", 1<<20)))
	h, err := tr.Next()
	require.NoError(t, err)
	require.Equal(t, "big", h.Name)
	require.Equal(t, "1", h.PAXRecords["GNU.sparse.minor"])
	n, err := io.Copy(io.Discard, tr)
	require.NoError(t, err)
	require.Equal(t, int64(1<<20), n)
}
