// Package registry pulls images from and pushes them to OCI distribution
// registries (Docker Hub, distribution, Harbor, a cloud's registry) into
// and out of berth's image store, on go-containerregistry's remote
// client.
//
// A registry is untrusted input, like an archive. A pull goes through the
// store's own import path (image.Store.Pull): every blob's digest and size
// and every layer's diff ID is verified while it streams to disk, every
// image.Limits bound holds, manifests and indexes are capped in size and
// number, and the store changes in one atomic step or not at all. A pull
// creates exactly the tag it was asked for (none for a digest), whatever
// the registry's manifests and indexes claim. Blobs the store holds are
// not downloaded again, and concurrent pulls of one blob from one
// repository download it once; a pull never waits on another registry's
// pace.
//
// Transport: HTTPS by default. Plain HTTP only to a loopback registry
// (localhost, 127.0.0.0/8, ::1), as Docker allows, or to hosts named in
// Options.Insecure; any other plain-HTTP request, redirects included, is
// refused. A redirect to another scheme, from one host to a private or
// loopback address, or past the tenth is refused before it is followed.
// Responses other than blobs (pings, tokens, manifests) are capped as
// manifests are, and failed requests are tried again only within the
// pull's context. Credentials come from the Docker config
// (~/.docker/config.json or $DOCKER_CONFIG) through authn's keychain. Options.Mirrors are tried
// before the registry itself, as containerd's hosts configuration does;
// pushes go to the registry only.
//
// Error classes (github.com/containerd/errdefs): invalid-argument for a
// bad reference or content that does not match what it claims (or that a
// registry could not describe), resource-exhausted for a limit,
// not-found for an image the registry does not have, permission-denied
// for refused credentials or a request the transport policy refuses,
// unavailable for a registry that cannot be
// reached or fails, and the context's own errors for a pull that took
// too long.
package registry
