package cri

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version is berth's CRI runtime version.
const Version = "0.1.0"

// Server serves the CRI over gRPC.
type Server struct {
	Images  *ImageService
	Runtime *RuntimeService
	grpc    *grpc.Server
}

// NewServer serves images and, when rs is not nil, pods and containers;
// opts tune the gRPC server (interceptors, limits).
func NewServer(images *ImageService, rs *RuntimeService, opts ...grpc.ServerOption) *Server {
	s := &Server{Images: images, Runtime: rs, grpc: grpc.NewServer(opts...)}
	cri.RegisterImageServiceServer(s.grpc, s.Images)
	if rs != nil {
		cri.RegisterRuntimeServiceServer(s.grpc, rs)
	}
	return s
}

// Listen opens a unix socket at addr (unix:///path or /path), replacing a
// stale socket file; the directory is created.
func Listen(addr string) (net.Listener, error) {
	p := strings.TrimPrefix(addr, "unix://")
	if !filepath.IsAbs(p) {
		return nil, fmt.Errorf("listen %q: not unix:///ABSOLUTE/PATH: %w", addr, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %q: a file that is not a socket is there: %w", addr, errdefs.ErrAlreadyExists)
		}
		// A socket nobody answers on is what a dead server left.
		if c, err := net.Dial("unix", p); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %q: a server answers there: %w", addr, errdefs.ErrAlreadyExists)
		}
		os.Remove(p)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, err
	}
	// The socket is root's alone, whatever the umask: whoever can
	// connect can run containers.
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	return l, nil
}

// Serve serves on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Stop stops serving, letting calls in progress end.
func (s *Server) Stop() { s.grpc.GracefulStop() }
