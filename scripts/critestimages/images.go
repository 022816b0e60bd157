package main

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// The references are critest's (sigs.k8s.io/cri-tools v1.37.0,
// pkg/validate/consts*.go, security_context_linux.go,
// multi_container_linux.go, pkg/framework): a CRI server reaches the local
// registry through mirrors of registry.k8s.io, k8s.gcr.io and gcr.io.
// Not built: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...
// (pinned by a digest no offline build can give), the Windows images, and
// the benchmarks' public.ecr.aws/docker/library/busybox tags.
const (
	e2e     = "registry.k8s.io/e2e-test-images/"
	staging = "gcr.io/k8s-staging-cri-tools/"
)

// pathEnv is the PATH of every image, as in Docker's busybox image.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// spec is one image: the layers (by name, see build) bottom first, its
// configuration and the references it is pushed as.
type spec struct {
	name   string
	refs   []string
	layers []string
	config ocispec.ImageConfig
}

// busybox is the configuration of Docker's busybox image, which most of
// critest's images are built FROM.
var busybox = ocispec.ImageConfig{Env: []string{pathEnv}, Cmd: []string{"sh"}}

func withUser(u string) ocispec.ImageConfig {
	c := busybox
	c.User = u
	return c
}

// emptyFile names a layer holding one empty file: cri-tools' image-test
// Dockerfile adds a file named after the image to busybox, so that each
// test image has an ID of its own.
func emptyFile(name string) string { return "empty:/" + name }

var images = []spec{
	{
		// DefaultTestContainerImage: nearly every spec runs its commands
		// (sh, echo, sleep, top, id, ls, touch, ping, brctl, netstat,
		// hostname, mount, dd, pidof, ipcs, pgrep, chmod...) in it.
		// MaskedPaths masks /bin/ls and expects "/bin/sh: ls: Permission
		// denied": the shell must exec ls, hence the dynamic busybox and
		// hard links (a masked symbolic link would mask busybox itself).
		name: "busybox", refs: []string{e2e + "busybox:1.29-2"},
		layers: []string{"busybox"}, config: busybox,
	},
	{
		// Security Context's HostPID, PodPID and ContainerPID specs wait
		// for /var/run/nginx.pid, look for a process named nginx and for
		// "master process" in /proc/1/cmdline; Networking's port-mapping
		// specs GET / on port 80 (200 expected).
		name: "nginx", refs: []string{e2e + "nginx:1.14-2"},
		layers: []string{"busybox", "nginx", "nginx-conf:80"},
		config: ocispec.ImageConfig{
			Env: []string{pathEnv}, Cmd: []string{"nginx", "-g", "daemon off;"},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
		},
	},
	{
		// cri-tools' images/hostnet-nginx: nginx on port 12003 for the
		// host-network port-forward spec (it GETs 127.0.0.1:12003; this
		// one listens on loopback only, it shares the host's network).
		name: "hostnet-nginx", refs: []string{staging + "hostnet-nginx-amd64:latest"},
		layers: []string{"busybox", "nginx", "nginx-conf:127.0.0.1:12003"},
		config: ocispec.ImageConfig{
			Env: []string{pathEnv}, Cmd: []string{"nginx", "-g", "daemon off;"},
			ExposedPorts: map[string]struct{}{"12003/tcp": {}},
		},
	},
	{
		// Multiple Containers: GET / on port 80, "httpd" in the log
		// without any request, echo by exec. busybox's httpd serves.
		name: "httpd", refs: []string{e2e + "httpd:2.4.39-4"},
		layers: []string{"busybox", "httpd"},
		config: ocispec.ImageConfig{
			Env: []string{pathEnv}, Cmd: []string{"httpd-foreground"},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
		},
	},
	{
		// NoNewPrivs: run as uid 1000, the setuid-root nnp prints
		// "Effective uid: 0" unless no_new_privs is set (then 1000).
		name: "nonewprivs", refs: []string{e2e + "nonewprivs:1.3"},
		layers: []string{"busybox", "nnp"},
		config: ocispec.ImageConfig{Env: []string{pathEnv}, Entrypoint: []string{"/usr/local/bin/nnp"}},
	},
	{
		// The sandbox image (containerd's sandbox_image), and the Image
		// Manager's "same image from different registries" specs: one
		// image under two names, one ID.
		name: "pause", refs: []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"},
		layers: []string{"pause"},
		config: ocispec.ImageConfig{Env: []string{pathEnv}, Entrypoint: []string{"/pause"}, User: "65535:65535"},
	},
	// Image Manager and Image Consistency: pulls by tag, without tag,
	// removal, listings; three images with IDs of their own, one image
	// under three tags, a tag per spec.
	{name: "test-image-latest", refs: []string{staging + "test-image-latest:latest"},
		layers: []string{"busybox", emptyFile("test-image-latest")}, config: busybox},
	{name: "test-image-tag-test", refs: []string{staging + "test-image-tag:test"},
		layers: []string{"busybox", emptyFile("test")}, config: busybox},
	{name: "test-image-tag-all", refs: []string{staging + "test-image-tag:all"},
		layers: []string{"busybox", emptyFile("all")}, config: busybox},
	{name: "test-image-1", refs: []string{staging + "test-image-1:latest"},
		layers: []string{"busybox", emptyFile("test-image-1")}, config: busybox},
	{name: "test-image-2", refs: []string{staging + "test-image-2:latest"},
		layers: []string{"busybox", emptyFile("test-image-2")}, config: busybox},
	{name: "test-image-3", refs: []string{staging + "test-image-3:latest"},
		layers: []string{"busybox", emptyFile("test-image-3")}, config: busybox},
	{name: "test-image-tags", refs: []string{staging + "test-image-tags:1", staging + "test-image-tags:2", staging + "test-image-tags:3"},
		layers: []string{"busybox", emptyFile("same-image")}, config: busybox},
	// "image status get image fields should not have Uid|Username empty":
	// the image's USER as cri-tools' images/build gives it.
	{name: "test-image-user-uid", refs: []string{staging + "test-image-user-uid:latest"},
		layers: []string{"busybox"}, config: withUser("1002")},
	{name: "test-image-user-username", refs: []string{staging + "test-image-user-username:latest"},
		layers: []string{"busybox"}, config: withUser("www-data")},
	{name: "test-image-user-uid-group", refs: []string{staging + "test-image-user-uid-group:latest"},
		layers: []string{"busybox"}, config: withUser("1003:1004")},
	{name: "test-image-user-username-group", refs: []string{staging + "test-image-user-username-group:latest"},
		layers: []string{"busybox"}, config: withUser("www-data:1004")},
	{
		// SupplementalGroupsPolicy (Merge, Strict) and the image volume
		// subPath spec: default-user (1000) in group-defined-in-image
		// (50000) by /etc/group, USER 1000.
		name: "test-image-predefined-group", refs: []string{staging + "test-image-predefined-group:latest"},
		layers: []string{"busybox", "predefined-group"}, config: withUser("1000"),
	},
}
