// Package cri serves the Kubernetes Container Runtime Interface (CRI v1,
// k8s.io/cri-api) over berth's portable packages: runtime.Runtime for pods
// and containers, the image store (package image) and registries
// (image/registry) for images, CNI (cri/network) for pod networks. It
// imports no backend: the daemon (examples/berth-cri) chooses them, one
// runtime per runtime handler (Kubernetes' RuntimeClass).
//
// # Pods
//
// A pod is an infra container: created and never started, so its init
// (berth's own binary, re-executed by the engine, waiting for a start that
// never comes) holds the pod's namespaces and is PID 1 of its PID
// namespace, with no image to pull. Its root filesystem is an empty
// directory shared by every infra. Package network pins its network
// namespace when it sets the pod's network up, so the CNI plugins tear it
// down in that namespace whatever becomes of the init's PID. The pod's
// containers join the infra's network, IPC and UTS namespaces (and PID
// with pid=POD, its user namespace and ID range with a user-namespaced
// pod) through runtime.Config.Join; NODE modes share the host's, which the
// runtime admits only under SecurityPolicy.AllowHostNamespaces.
//
// # Containers
//
// A container's config becomes an OCI spec: the image's config merged as
// the CRI says (a command replaces the entrypoint, args the command), the
// user resolved in the image's /etc/passwd and /etc/group (read inside
// the image's tree: no link leads out of it), the security context
// (capabilities, no_new_privs, masked and read-only paths on top of the
// runtime's own, read-only root, seccomp RuntimeDefault/Unconfined/
// Localhost), resources. Host paths are binds under the runtime's volume
// policy, with the mount's propagation (None rprivate, HostToContainer
// rslave, Bidirectional rshared: from a host path on a shared mount) and
// read-only as the kubelet means it: the bind alone (ro), or with
// recursive_read_only every mount under it (rro; read-only, private
// propagation). Whatever the spec asks, the runtime's security policy
// decides: a privileged container, an unconfined seccomp profile, a host
// namespace, a Bidirectional mount are refused with PermissionDenied unless the daemon was started with the
// switch that admits them. The container's output goes to the CRI log
// file the kubelet names, written by the container's monitor, so it keeps
// going while the server restarts.
//
// A container's groups are its primary group, the groups the image's
// /etc/group gives its user (supplemental groups policy Merge; none under
// Strict) and the supplemental groups asked for; its status reports the
// user its process got. An image volume is the runtime's image mount
// (runtime.ImageMount): the image of the store, or a path of it, read-only
// (a mount that is not read-only is refused), held until the container is
// removed.
//
// A container config's tty gives its process a terminal (and TERM=xterm
// unless set), whose output the CRI log records as stdout; stdin keeps
// its standard input open for attachments, and stdin_once closes it when
// the first attachment's input ends.
//
// # Metrics
//
// ContainerStats and PodSandboxStats read the runtime's Stats;
// ListPodSandboxMetrics gives the same readings as cAdvisor's metrics
// (container_cpu_usage_seconds_total, container_memory_working_set_bytes,
// container_fs_usage_bytes...), with cAdvisor's labels after the base ones
// (id, image, namespace, pod, container): each running container's, and
// the pod's network metrics from its infra container's namespace.
//
// # Streaming
//
// Exec, Attach and PortForward check their request (the container exists
// and runs, the pod is ready: NotFound, FailedPrecondition; a stream is
// asked for, not tty with stderr: InvalidArgument) and return a URL of the
// streaming server, k8s.io/cri-streaming (the kubelet's library), served
// on a loopback address of its own (RuntimeOptions.StreamAddr; a port of
// the kernel's choosing by default). It has neither authentication nor
// TLS, so no other address is taken (a loopback IP, not a name): the
// kubelet on the same host proxies the streams. A URL serves once, within
// a minute.
//
// Every stream lives within its client's connection (the server watches
// the connection, which net/http no longer does once a stream took it
// over): when the client goes away, or the server closes, an exec's
// process is killed (containerd lets it run until it exits), an
// attachment is dropped and its container goes on, a forwarded connection
// is closed. Nothing of a stream is left behind: an exec without a
// terminal writes to pipes of the server's own, so a process it left
// running in the container and that holds its output holds nothing of the
// server's. An exec's exit code goes to the client as the protocol says
// (v4 and later). A terminal's size follows the client's.
//
// A forwarded connection is made to 127.0.0.1 (then ::1) in the pod's
// network namespace, the infra's as it was created: the socket is made on
// a thread that entered the namespace and is thrown away afterwards, and
// keeps the namespace wherever it is used. A pod on the host's network
// gets the host's loopback. A port nobody listens on fails that one
// connection, and the others go on. The end of one side's data is passed
// on to the other as a half-close.
//
// # State
//
// The server keeps a record of each pod and container (the kubelet's
// config, what it set up) in its state directory, written atomically; the
// runtimes keep theirs. A restarted server lists and controls what an
// earlier one made.
//
// Errors carry the gRPC code of their errdefs class (errgrpc): a bad
// reference is InvalidArgument, an unknown ID NotFound, a name in use
// AlreadyExists, a refused privilege PermissionDenied, a limit
// ResourceExhausted. Stopping or removing what is not there succeeds, as
// the CRI asks.
package cri
