// Package network gives pods their network through CNI plugins (libcni,
// github.com/containernetworking/cni), as the kubelet's runtimes do: the
// CRI server (package cri) sets a pod's network namespace up when it
// creates the pod's sandbox and tears it down when it stops it. It imports
// no backend: it works on a network namespace's path, whoever made it.
//
// The network is the first configuration file (*.conf, *.conflist,
// *.json) in lexical order in Options.ConfDir, read again at every Setup
// and Status, so a change to the directory takes effect at the next pod.
// Every pod also gets lo up through the loopback plugin (a network of its
// own, "cni-loopback"), and its interface on the network is eth0.
// scripts/setup-cni.sh writes berth's default network,
// /etc/berth/cni/net.d/10-berth.conflist: a bridge (berth-cni0, the
// pods' gateway, masquerading their traffic out), host-local addresses
// from 10.99.0.0/16 and host ports through the portmap plugin, with
// Debian's containernetworking-plugins in /usr/lib/cni.
//
// The plugins are told the pod's ID (the sandbox's, also libcni's
// container ID) and, in CNI_ARGS, K8S_POD_NAMESPACE, K8S_POD_NAME,
// K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID and IgnoreUnknown=1; its host
// ports go in the portMappings capability. libcni caches each pod's
// configuration, arguments and result in Options.CacheDir: Teardown
// tears down with what Setup used, whatever the directory holds now, and
// Cached gives a restarted server its pods' addresses.
//
// Nothing is left behind: a Setup that fails tears down what it did (the
// veth pair, the address lease, the host ports and masquerading rules);
// Teardown runs every plugin's teardown even when one of them fails or is
// missing, may run again, and releases the lease and the rules of a pod
// whose network namespace is already gone.
//
// Errors carry an errdefs class and name the pod: invalid-argument for a
// pod that is not valid (an ID the CNI refuses, ';' or '=' in a name, a
// port out of range, a NetNS that is not a network namespace or is this
// process's own), unavailable when the network is not ready (no
// configuration, one that does not parse, a plugin missing; Status says
// which), already-exists for a second Setup of a pod, resource-exhausted
// when the address range is used up, not-found from Cached for a pod the
// cache does not know, and unknown for a plugin's other failures.
//
// Setup and Teardown need root (CAP_NET_ADMIN and CAP_SYS_ADMIN in the
// host's namespaces): the plugins make interfaces, move them between
// namespaces and change the host's iptables rules.
package network
