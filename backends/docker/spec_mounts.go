package docker

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/moby/moby/api/types/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// standardMount is one of the file systems Docker mounts in every
// container, with the options it uses.
type standardMount struct {
	typ     string
	options []string
}

var standardMounts = map[string]standardMount{
	"/proc":          {"proc", []string{"nodev", "noexec", "nosuid"}},
	"/dev":           {"tmpfs", []string{"mode=755", "nosuid", "size=65536k", "strictatime"}},
	"/dev/pts":       {"devpts", []string{"mode=0620", "newinstance", "noexec", "nosuid", "ptmxmode=0666"}},
	"/dev/shm":       {"tmpfs", []string{"mode=1777", "nodev", "noexec", "nosuid"}}, // plus size=ShmSize
	"/dev/mqueue":    {"mqueue", []string{"nodev", "noexec", "nosuid"}},
	"/sys":           {"sysfs", []string{"nodev", "noexec", "nosuid", "ro"}},
	"/sys/fs/cgroup": {"cgroup", []string{"nodev", "noexec", "nosuid", "ro"}},
}

// translateMounts: the standard file systems must be Docker's own (it
// mounts them whatever the spec says); binds and tmpfs mounts are
// translated; any other file system is refused.
func translateMounts(s *specs.Spec, t *translation) error {
	seen := map[string]bool{}
	for i, m := range s.Mounts {
		dest := filepath.Clean(m.Destination)
		if std, ok := standardMounts[dest]; ok && m.Type == std.typ {
			if err := standardMountOptions(dest, std, m.Options, t); err != nil {
				return err
			}
			seen[dest] = true
			continue
		}
		switch {
		case m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind"):
			bm, idmapped, err := bindMount(m)
			if err != nil {
				return err
			}
			if idmapped {
				if t.remap == nil || t.mapBind == nil || !driver.HasUserNamespace(s) {
					return notImplemented("spec: ID-mapped bind of %s outside a user namespace of a userns-remap daemon", m.Source)
				}
				if bm.Source, err = t.mapBind(m.Source); err != nil {
					return err
				}
				// The mapping in force is the daemon's.
				s.Mounts[i].UIDMappings = slices.Clone(t.remap.UID)
				s.Mounts[i].GIDMappings = slices.Clone(t.remap.GID)
			}
			t.host.Mounts = append(t.host.Mounts, bm)
		case m.Type == "tmpfs":
			if t.host.Tmpfs == nil {
				t.host.Tmpfs = map[string]string{}
			}
			t.host.Tmpfs[dest] = strings.Join(m.Options, ",")
		default:
			return notImplemented("spec: mount of %s (%s) at %s: Docker mounts only binds and tmpfs", m.Source, m.Type, m.Destination)
		}
	}
	var missing []string
	for dest := range standardMounts {
		if !seen[dest] {
			missing = append(missing, dest)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return notImplemented("spec: Docker always mounts %s", strings.Join(missing, ", "))
	}
	return nil
}

func standardMountOptions(dest string, std standardMount, options []string, t *translation) error {
	var got []string
	for _, o := range options {
		switch {
		case o == "relatime" || o == "rw" && !slices.Contains(std.options, "ro"):
			// the kernel's default
		case dest == "/dev/shm" && strings.HasPrefix(o, "size="):
			n, err := volume.ParseBytes(strings.TrimPrefix(o, "size="))
			if err == nil && n == 0 {
				err = errors.New("a size of 0")
			}
			if err != nil {
				return invalid("spec: /dev/shm %s: %v", o, err)
			}
			t.host.ShmSize = n
		default:
			got = append(got, o)
		}
	}
	if !slices.Equal(sortedSet(got), std.options) {
		return notImplemented("spec: Docker mounts %s (%s) with options %s, not %s",
			dest, std.typ, strings.Join(std.options, ","), strings.Join(options, ","))
	}
	return nil
}

// bindPropagations are the propagation options a bind mount may carry.
var bindPropagations = map[string]mount.Propagation{
	"private": mount.PropagationPrivate, "rprivate": mount.PropagationRPrivate,
	"shared": mount.PropagationShared, "rshared": mount.PropagationRShared,
	"slave": mount.PropagationSlave, "rslave": mount.PropagationRSlave,
}

// inheritedFlags are bind options Docker cannot set, but that a bind mount
// inherits from its source's mount: accepted when the source has them.
var inheritedFlags = map[string]uint64{"nosuid": unix.ST_NOSUID, "nodev": unix.ST_NODEV, "noexec": unix.ST_NOEXEC}

// bindMount translates a bind mount of a host path (berth's volumes reach
// the container this way), and tells whether it asks to be ID-mapped.
func bindMount(m specs.Mount) (_ mount.Mount, idmapped bool, _ error) {
	if !filepath.IsAbs(m.Source) {
		return mount.Mount{}, false, invalid("spec: bind source %q is not absolute", m.Source)
	}
	out := mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Destination, BindOptions: &mount.BindOptions{NonRecursive: true}}
	var fs unix.Statfs_t
	statted := false
	for _, o := range m.Options {
		switch {
		case o == "bind":
		case o == "rbind":
			out.BindOptions.NonRecursive = false
		case o == "ro":
			out.ReadOnly = true
		case o == "rro":
			// berth's mount of the source (the runtime's volume
			// manager) is read-only all the way down already.
			out.ReadOnly = true
		case o == "rw":
		case o == "idmap" || o == "ridmap":
			idmapped = true
		case bindPropagations[o] != "":
			out.BindOptions.Propagation = bindPropagations[o]
		case inheritedFlags[o] != 0:
			if !statted {
				if err := unix.Statfs(m.Source, &fs); err != nil {
					return mount.Mount{}, false, invalid("spec: bind source %s: %v", m.Source, err)
				}
				statted = true
			}
			if uint64(fs.Flags)&inheritedFlags[o] == 0 {
				return mount.Mount{}, false, notImplemented("spec: bind of %s with %s: Docker cannot set it, and the source is not mounted %s", m.Source, o, o)
			}
		default:
			return mount.Mount{}, false, notImplemented("spec: bind of %s: Docker cannot set option %q", m.Source, o)
		}
	}
	if _, err := os.Stat(m.Source); err != nil {
		return mount.Mount{}, false, invalid("spec: bind source: %v", err)
	}
	if out.ReadOnly {
		if !statted {
			statted = unix.Statfs(m.Source, &fs) == nil
		}
		if statted && uint64(fs.Flags)&unix.ST_RDONLY != 0 {
			// The source is mounted read-only (berth's mount, as the
			// volume manager makes it for a read-only bind): the bind
			// inherits that, with nosuid and nodev. Asking Docker for
			// read-only would have runc remount the bind with that flag
			// alone, which outside a user namespace clears the others.
			out.ReadOnly = false
		}
	}
	return out, idmapped, nil
}
