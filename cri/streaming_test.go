package cri

import (
	"net"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// The streaming server has no authentication: it listens on loopback
// only, whatever it is told.
func TestStreamServerLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "10.0.0.1:10010", "localhost:0", "example.com:80", "127.0.0.1", "nonsense"} {
		_, err := newStreamServer(addr, streamRuntime{})
		require.True(t, errdefs.IsInvalidArgument(err), "%s: %v", addr, err)
	}
	for _, addr := range []string{"", "127.0.0.1:0", "127.0.0.2:0", "[::1]:0"} {
		s, err := newStreamServer(addr, streamRuntime{})
		if addr == "[::1]:0" && err != nil && !errdefs.IsInvalidArgument(err) {
			t.Logf("no IPv6 loopback here: %v", err)
			continue
		}
		require.NoError(t, err, addr)
		require.True(t, s.addr().(*net.TCPAddr).IP.IsLoopback(), "%s: %s", addr, s.addr())
		require.NoError(t, s.close())
		_, err = net.Dial("tcp", s.addr().String())
		require.Error(t, err, "still served after close")
	}
}
