package network

import (
	"fmt"
	"net"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"
)

// Pod is what the plugins are told about a pod.
type Pod struct {
	// ID is the sandbox's ID (K8S_POD_INFRA_CONTAINER_ID, and libcni's
	// container ID): letters, digits, '_', '.' and '-', not starting with
	// one of the last three.
	ID string
	// Name, Namespace and UID are the pod's, passed as K8S_POD_NAME,
	// K8S_POD_NAMESPACE and K8S_POD_UID; none may hold ';' or '='.
	Name, Namespace, UID string
	// NetNS is the absolute path of the pod's network namespace, for
	// Setup: a pinned namespace (/run/netns/NAME) or /proc/PID/ns/net
	// of a process in it. Setup pins the namespace itself, so the path
	// need not outlive the call; Teardown does not use it.
	NetNS string
	// PortMappings are the pod's host ports (the portmap plugin's
	// portMappings capability). Mappings with HostPort 0 are not passed.
	PortMappings []PortMapping
}

// PortMapping maps a port of the host to one of the pod.
type PortMapping struct {
	// Protocol is tcp (when empty), udp or sctp.
	Protocol string
	// ContainerPort is the pod's port, HostPort the host's (0: none).
	ContainerPort, HostPort int32
	// HostIP is the host address the port is mapped on; empty for all.
	HostIP string
}

// portMapEntry is a mapping as the portMappings capability spells it.
type portMapEntry struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// errorf is an error about the pod, which it names.
func (p Pod) errorf(format string, args ...any) error {
	return fmt.Errorf("pod %s/%s (%s): %w", p.Namespace, p.Name, p.ID, fmt.Errorf(format, args...))
}

// validate checks what the plugins would be given (NetNS aside: Setup
// checks it, Teardown does not use it).
func (p Pod) validate() error {
	if err := utils.ValidateContainerID(p.ID); err != nil {
		return p.errorf("ID %q: %s: %w", p.ID, err.Msg, errdefs.ErrInvalidArgument)
	}
	for _, f := range []struct{ name, v string }{{"name", p.Name}, {"namespace", p.Namespace}, {"UID", p.UID}} {
		if strings.ContainsAny(f.v, ";=") || strings.ContainsFunc(f.v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return p.errorf("%s %q: holds ';', '=' or a control character: %w", f.name, f.v, errdefs.ErrInvalidArgument)
		}
	}
	for _, m := range p.PortMappings {
		switch strings.ToLower(m.Protocol) {
		case "", "tcp", "udp", "sctp":
		default:
			return p.errorf("port mapping %+v: protocol %q is none of tcp, udp, sctp: %w", m, m.Protocol, errdefs.ErrInvalidArgument)
		}
		if m.ContainerPort < 1 || m.ContainerPort > 65535 || m.HostPort < 0 || m.HostPort > 65535 {
			return p.errorf("port mapping %+v: a port out of range: %w", m, errdefs.ErrInvalidArgument)
		}
		if m.HostIP != "" && net.ParseIP(m.HostIP) == nil {
			return p.errorf("port mapping %+v: host IP %q is not an IP address: %w", m, m.HostIP, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// runtimeConf is what libcni passes the plugins for the pod's interface
// ifName in netns.
func (p Pod) runtimeConf(netns, ifName string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       netns,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
	}
	var ports []portMapEntry
	for _, m := range p.PortMappings {
		if m.HostPort == 0 {
			continue
		}
		proto := strings.ToLower(m.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		ports = append(ports, portMapEntry{HostPort: int(m.HostPort), ContainerPort: int(m.ContainerPort), Protocol: proto, HostIP: m.HostIP})
	}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}
