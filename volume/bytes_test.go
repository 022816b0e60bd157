package volume

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseBytesSuffixes: the binary units k, m, g, t, p in any case, with
// an optional b or ib; nothing but integers.
func TestParseBytesSuffixes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "7": 7, "7b": 7, "7B": 7, "1k": 1 << 10, "1K": 1 << 10, "1kb": 1 << 10, "1KiB": 1 << 10,
		"64m": 64 << 20, "64MB": 64 << 20, "64mib": 64 << 20, "2g": 2 << 30, "2GiB": 2 << 30,
		"3t": 3 << 40, "3TB": 3 << 40, "5p": 5 << 50, "5PiB": 5 << 50, "8589934591g": 8589934591 << 30,
	} {
		got, err := ParseBytes(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "k", "b", "-1", "+5", "1.5g", "1e3", "0x10", " 1", "1 k", "1k ", "1kk", "1kbb",
		"1x", "1ki", "1e", "8589934592g", "99999999999999999999", "lots"} {
		_, err := ParseBytes(in)
		assert.Error(t, err, in)
	}
}
