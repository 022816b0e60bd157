// Package cri serves the Kubernetes Container Runtime Interface (CRI v1,
// k8s.io/cri-api) over berth's portable packages: the image store (package
// image), registries (image/registry) and, in time, runtime.Runtime. It
// imports no backend: the daemon (examples/berth-cri) chooses them.
//
// What is served so far is the ImageService: PullImage through the
// registry client (mirrors, the insecure-registry policy, the store's
// limits and tag confinement), ListImages, ImageStatus, RemoveImage and
// ImageFsInfo; and the RuntimeService's Version. Pods and containers are
// not served yet: their calls answer Unimplemented (gRPC's own answer for
// a service method a server does not have). Package cri/network, which
// gives pods their network through CNI plugins, is ready for them.
//
// Errors carry the gRPC code of their errdefs class (errgrpc): a bad
// reference is InvalidArgument, a registry that refuses credentials
// PermissionDenied, a limit ResourceExhausted, and so on.
package cri
