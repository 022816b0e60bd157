package cri

import (
	"strings"
	"sync"

	"github.com/moby/sys/capability"
)

// ownCapabilities are the capabilities in this process's bounding set:
// "ALL" and a privileged container get these, as containerd gives them,
// since no process can grant a capability it cannot hold (a sandbox may
// withhold some, CAP_SYS_RESOURCE for one).
var ownCapabilities = sync.OnceValue(func() []string {
	var out []string
	caps, err := capability.NewPid2(0)
	if err == nil {
		err = caps.Load()
	}
	for _, c := range capability.ListKnown() {
		if err == nil && !caps.Get(capability.BOUNDING, c) {
			continue
		}
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
})
