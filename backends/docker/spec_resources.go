package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// translateResources: memory, CPU, pids, block I/O weight and device
// access rules.
func translateResources(s *specs.Spec, t *translation) error {
	r := s.Linux.Resources
	if r == nil {
		return nil
	}
	res := &t.host.Resources
	if m := r.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			res.Memory = *m.Limit
			// OCI: no swap limit given means none set (runc leaves it
			// unlimited); Docker would make it twice the memory.
			res.MemorySwap = -1
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
		if m.Reservation != nil {
			res.MemoryReservation = *m.Reservation
		}
		if m.Swappiness != nil {
			v := int64(*m.Swappiness)
			res.MemorySwappiness = &v
		}
		res.OomKillDisable = m.DisableOOMKiller
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			res.CPUShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			res.CPUQuota = *c.Quota
		}
		if c.Period != nil {
			res.CPUPeriod = int64(*c.Period)
		}
		if c.RealtimeRuntime != nil {
			res.CPURealtimeRuntime = *c.RealtimeRuntime
		}
		if c.RealtimePeriod != nil {
			res.CPURealtimePeriod = int64(*c.RealtimePeriod)
		}
		res.CpusetCpus, res.CpusetMems = c.Cpus, c.Mems
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		v := *r.Pids.Limit
		res.PidsLimit = &v
	}
	if r.BlockIO != nil && r.BlockIO.Weight != nil {
		res.BlkioWeight = *r.BlockIO.Weight
	}
	return deviceRules(r.Devices, t)
}

// deviceRules: Docker denies every device but its standard ones, then
// applies allow rules. The spec's list must start the same way (a deny-all
// rule, as in runtime.DefaultSpec) and add only allow rules; no list at all
// leaves Docker's default.
func deviceRules(rules []specs.LinuxDeviceCgroup, t *translation) error {
	if len(rules) == 0 {
		return nil
	}
	first := rules[0]
	if first.Allow || (first.Type != "" && first.Type != "a") || first.Major != nil || first.Minor != nil || !sameAccess(first.Access, "rwm") {
		return notImplemented("spec: Docker's device rules start with deny-all; this list starts with %+v", first)
	}
	for _, d := range rules[1:] {
		if !d.Allow {
			return notImplemented("spec: Docker has only allow rules after its deny-all")
		}
		typ := d.Type
		if typ == "" {
			typ = "a"
		}
		num := func(p *int64) string {
			if p == nil {
				return "*"
			}
			return strconv.FormatInt(*p, 10)
		}
		t.host.DeviceCgroupRules = append(t.host.DeviceCgroupRules, fmt.Sprintf("%s %s:%s %s", typ, num(d.Major), num(d.Minor), d.Access))
	}
	return nil
}

func sameAccess(a, b string) bool {
	as, bs := strings.Split(a, ""), strings.Split(b, "")
	return slices.Equal(sortedSet(as), sortedSet(bs))
}

// translateDevices: Docker creates a device node only from a host node,
// which it copies with its owner and mode. Each node of the spec must
// exist on the host with the same type and numbers (found through
// /sys/dev), and a rule of the spec must allow it.
func translateDevices(s *specs.Spec, t *translation) error {
	for _, d := range s.Linux.Devices {
		if d.Type != "b" && d.Type != "c" && d.Type != "u" {
			return notImplemented("spec: device %s of type %q: Docker maps block and character devices", d.Path, d.Type)
		}
		host, st, err := hostDevice(d)
		if err != nil {
			return err
		}
		if d.FileMode != nil && d.FileMode.Perm() != os.FileMode(st.Mode).Perm() ||
			d.UID != nil && *d.UID != st.Uid || d.GID != nil && *d.GID != st.Gid {
			return notImplemented("spec: device %s: Docker copies the owner and mode of the host's %s", d.Path, host)
		}
		access := allowedAccess(s.Linux.Resources, d)
		if access == "" {
			return notImplemented("spec: device %s: Docker allows access to every node it creates; the spec allows none", d.Path)
		}
		t.host.Devices = append(t.host.Devices, container.DeviceMapping{PathOnHost: host, PathInContainer: d.Path, CgroupPermissions: access})
	}
	return nil
}

// hostDevice finds the host's node for d: the kernel names every device
// under /sys/dev/{block,char}/MAJOR:MINOR.
func hostDevice(d specs.LinuxDevice) (string, *unix.Stat_t, error) {
	kind := "char"
	if d.Type == "b" {
		kind = "block"
	}
	uevent, err := os.ReadFile(fmt.Sprintf("/sys/dev/%s/%d:%d/uevent", kind, d.Major, d.Minor))
	if err != nil {
		return "", nil, invalid("spec: device %s (%s %d:%d) does not exist on the host", d.Path, d.Type, d.Major, d.Minor)
	}
	for _, line := range strings.Split(string(uevent), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			host := filepath.Join("/dev", name)
			var st unix.Stat_t
			if err := unix.Stat(host, &st); err != nil || unix.Major(st.Rdev) != uint32(d.Major) || unix.Minor(st.Rdev) != uint32(d.Minor) {
				break
			}
			return host, &st, nil
		}
	}
	return "", nil, invalid("spec: device %s (%s %d:%d) has no node under /dev on the host", d.Path, d.Type, d.Major, d.Minor)
}

// allowedAccess returns the access the spec's rules grant to device d.
func allowedAccess(r *specs.LinuxResources, d specs.LinuxDevice) string {
	if r == nil {
		return ""
	}
	access := ""
	for _, rule := range r.Devices {
		typ := rule.Type
		if typ != "" && typ != "a" && typ != d.Type {
			continue
		}
		if rule.Major != nil && *rule.Major != d.Major || rule.Minor != nil && *rule.Minor != d.Minor {
			continue
		}
		if rule.Allow {
			access = rule.Access
		} else {
			access = ""
		}
	}
	return access
}
