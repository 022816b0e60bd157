package cri

import (
	"context"
	"fmt"
	"net"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/internal/mountns"
)

// dialPod connects to port on the loopback of pod sb's network namespace,
// or of the host's for a pod on the host's network. The socket is made
// in the pod's namespace, on a thread that is thrown away afterwards (it
// never goes back to run other goroutines there), and keeps that
// namespace wherever it is used from.
func (s *RuntimeService) dialPod(ctx context.Context, sb *sandbox, port int) (net.Conn, error) {
	if sb.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == cri.NamespaceMode_NODE {
		return dialLoopback(ctx, port)
	}
	rt, err := s.handler(sb.Handler)
	if err != nil {
		return nil, err
	}
	infra, err := rt.Get(ctx, sb.ID)
	if err != nil {
		return nil, err
	}
	// The infra's namespace as it was created with it: the file names
	// it whatever becomes of the infra's PID.
	ns, err := infra.OpenNamespace(ctx, specs.NetworkNamespace)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var conn net.Conn
	err = mountns.OnThrowawayThread(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter the pod's network namespace: %w", err)
		}
		var err error
		conn, err = dialLoopback(ctx, port)
		return err
	})
	return conn, err
}

// dialLoopback connects to port on the calling thread's loopback, IPv4
// first, then IPv6, one after the other (a dial that tried both at once
// would make its second socket on another goroutine, maybe another
// thread: out of the namespace).
func dialLoopback(ctx context.Context, port int) (net.Conn, error) {
	var d net.Dialer
	c, err4 := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err4 == nil {
		return c, nil
	}
	c, err6 := d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
	if err6 == nil {
		return c, nil
	}
	return nil, fmt.Errorf("connect to port %d: IPv4: %w; IPv6: %v", port, err4, err6)
}
