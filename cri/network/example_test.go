package network_test

import (
	"context"
	"fmt"
	"log"

	"github.com/berthrun/berth/cri/network"
)

// A pod's network, from the configuration scripts/setup-cni.sh writes:
// set up in a network namespace made beforehand (here `ip netns add
// pod1`), then torn down. Needs root; prints the pod's address.
func Example() {
	m, err := network.New(network.Options{}) // /etc/berth/cni/net.d, /usr/lib/cni
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Status(); err != nil {
		log.Fatal(err) // e.g. no configuration: unavailable
	}
	ctx := context.Background()
	pod := network.Pod{
		ID: "4f1c2e", Name: "web", Namespace: "default", UID: "5d0e9a",
		NetNS:        "/run/netns/pod1",
		PortMappings: []network.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 8080}},
	}
	res, err := m.Setup(ctx, pod)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pod IP", res.IPs[0])

	// After a restart: the addresses from libcni's cache.
	if res, err = m.Cached(pod); err != nil {
		log.Fatal(err)
	}
	fmt.Println("pod IP", res.IPs[0])

	// The ID is enough; a second Teardown is fine.
	if err := m.Teardown(ctx, network.Pod{ID: pod.ID}); err != nil {
		log.Fatal(err)
	}
}
