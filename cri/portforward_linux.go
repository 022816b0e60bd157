package cri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/internal/mountns"
)

// loopbacks are the addresses a forwarded connection is made to, in this
// order (a server may listen on one family only).
var loopbacks = []struct {
	family int
	addr   func(port int) unix.Sockaddr
}{
	{unix.AF_INET, func(port int) unix.Sockaddr { return &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}} }},
	{unix.AF_INET6, func(port int) unix.Sockaddr {
		return &unix.SockaddrInet6{Port: port, Addr: [16]byte{15: 1}}
	}},
}

// dialPod connects to port on the loopback of pod sb's network namespace,
// or of the host's for a pod on the host's network.
//
// The sockets are made in the pod's namespace by a thread that entered
// it and is thrown away afterwards (it never runs another goroutine
// there); a socket keeps the namespace it was made in, so the connection
// is made and used from any goroutine, and no thread waits on the pod.
func (s *RuntimeService) dialPod(ctx context.Context, sb *sandbox, port int) (net.Conn, error) {
	var fds []int
	if sb.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == cri.NamespaceMode_NODE {
		var err error
		if fds, err = sockets(); err != nil {
			return nil, err
		}
	} else {
		rt, err := s.handler(sb.Handler)
		if err != nil {
			return nil, err
		}
		infra, err := rt.Get(ctx, sb.ID)
		if err != nil {
			return nil, err
		}
		// The infra's namespace as it was created with it: the file
		// names it whatever becomes of the infra's PID.
		ns, err := infra.OpenNamespace(ctx, specs.NetworkNamespace)
		if err != nil {
			return nil, err
		}
		err = mountns.OnThrowawayThread(func() error {
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter the pod's network namespace: %w", err)
			}
			var err error
			fds, err = sockets()
			return err
		})
		ns.Close()
		if err != nil {
			return nil, err
		}
	}
	var errs []error
	for i, fd := range fds {
		if fd < 0 {
			continue
		}
		c, err := connect(ctx, fd, loopbacks[i].addr(port))
		if err == nil {
			for _, rest := range fds[i+1:] {
				if rest >= 0 {
					unix.Close(rest)
				}
			}
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("connect to port %d: %w", port, errors.Join(errs...))
}

// sockets makes a non-blocking TCP socket of each loopback's family in
// the calling thread's network namespace (-1 for a family the kernel
// lacks, IPv6 on some hosts).
func sockets() ([]int, error) {
	fds := make([]int, 0, len(loopbacks))
	some := false
	for _, l := range loopbacks {
		fd, err := unix.Socket(l.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			fds = append(fds, -1)
			continue
		}
		if err != nil {
			for _, fd := range fds {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
			return nil, fmt.Errorf("socket: %w", err)
		}
		fds, some = append(fds, fd), true
	}
	if !some {
		return nil, fmt.Errorf("socket: no IPv4 nor IPv6: %w", unix.EAFNOSUPPORT)
	}
	return fds, nil
}

// connect connects the non-blocking socket fd to sa, waiting for the
// connection on the runtime's poller until ctx ends, and returns it as a
// net.Conn. It takes fd, closing it on failure.
func connect(ctx context.Context, fd int, sa unix.Sockaddr) (net.Conn, error) {
	cerr := unix.Connect(fd, sa)
	// Made a file after the connect, as net's own dial does: the poller
	// learns the socket's state as it is now, and its wait misses no
	// change after that.
	f := os.NewFile(uintptr(fd), "port-forward")
	defer f.Close()
	if errors.Is(cerr, unix.EINPROGRESS) {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
		defer stop()
		// Looked at before every wait: connected, failed (as net's own
		// dial reads it), or not yet.
		err = rc.Write(func(fd uintptr) bool {
			errno, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				cerr = err
			case errno == int(unix.EINPROGRESS) || errno == int(unix.EALREADY) || errno == int(unix.EINTR):
				return false
			case errno != 0:
				cerr = unix.Errno(errno)
			default:
				if _, err := unix.Getpeername(int(fd)); errors.Is(err, unix.ENOTCONN) {
					return false
				}
				cerr = nil
			}
			return true
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
	if cerr != nil {
		return nil, fmt.Errorf("connect %s: %w", sockaddrString(sa), cerr)
	}
	// A connection of its own (a duplicate of fd): f closes here.
	return net.FileConn(f)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return "?"
}
