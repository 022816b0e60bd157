package docker

import (
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/subid"
)

// remapDefaultSize is the range size Docker asks for when it creates the
// "dockremap" user, assumed when /etc/subuid cannot be read (a remote
// daemon).
const remapDefaultSize = 65536

// idMapping is the daemon's userns-remap mapping, the same for every
// container it runs.
type idMapping struct {
	UID, GID []specs.LinuxIDMapping
}

// daemonMapping works out the mapping of a userns-remap daemon. Docker puts
// the remapped root's host IDs in the name of its data root
// (/var/lib/docker/100000.100000) and maps the container's IDs onto the
// remap user's ranges in /etc/subuid and /etc/subgid, in order.
func daemonMapping(rootDir, subuid, subgid string) (*idMapping, bool) {
	u, g, ok := strings.Cut(filepath.Base(rootDir), ".")
	if !ok {
		return nil, false
	}
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	return &idMapping{
		UID: subordinateMapping(subuid, uint32(uid)),
		GID: subordinateMapping(subgid, uint32(gid)),
	}, true
}

// subordinateMapping maps container IDs 0.. onto the ranges of the user
// whose range starts at root, as Docker's idtools does.
func subordinateMapping(path string, root uint32) []specs.LinuxIDMapping {
	ranges := subid.Read(path)
	owner := ""
	for _, r := range ranges {
		if r.Start == uint64(root) {
			owner = r.Name
			break
		}
	}
	var out []specs.LinuxIDMapping
	next := uint64(0)
	for _, r := range ranges {
		if r.Name != owner || owner == "" {
			continue
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: uint32(next), HostID: uint32(r.Start), Size: uint32(r.Count)})
		next += r.Count
	}
	if len(out) == 0 {
		return []specs.LinuxIDMapping{{ContainerID: 0, HostID: root, Size: remapDefaultSize}}
	}
	return out
}
