package parallels

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
)

// A diskFS is a filesystem a root disk can be made of.
type diskFS struct {
	name string
	// minSize is the smallest disk mkfs accepts.
	minSize int64
	// populate makes the filesystem in the image file at path from the
	// tree under rootfs, without mounting anything; it returns the modes
	// its maker could not write, to set once mounted.
	populate func(ctx context.Context, path, rootfs string) ([]driver.PathMode, error)
	// grow extends the mounted filesystem at mp on device dev to the
	// device's new size.
	grow func(ctx context.Context, dev, mp string) error
	// growCapability is the capability online growth needs.
	growCapability int
}

// diskFilesystems lists the root disk filesystems: ext4 (the default,
// filled by mkfs.ext4 -d) and xfs (filled from a protofile). Online growth
// of ext4 needs CAP_SYS_RESOURCE, of xfs CAP_SYS_ADMIN.
var diskFilesystems = map[string]diskFS{
	"ext4": {name: "ext4", minSize: 16 << 20, populate: populateExt4, grow: growExt4, growCapability: unix.CAP_SYS_RESOURCE},
	"xfs":  {name: "xfs", minSize: 300 << 20, populate: populateXFS, grow: growXFS, growCapability: unix.CAP_SYS_ADMIN},
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func populateExt4(ctx context.Context, path, rootfs string) ([]driver.PathMode, error) {
	return nil, run(ctx, "mkfs.ext4", "-q", "-F", "-L", "berth-root", "-E", "root_owner=0:0", "-d", rootfs, path)
}

func growExt4(ctx context.Context, dev, mp string) error { return run(ctx, "resize2fs", dev) }

func growXFS(ctx context.Context, dev, mp string) error { return run(ctx, "xfs_growfs", mp) }

// populateXFS writes an xfs protofile describing rootfs (owners, modes,
// symlinks, device nodes, file contents by host path) and lets mkfs.xfs
// build the filesystem from it. Protofiles cannot hold names with blanks,
// the sticky bit (returned for the runtime to set once mounted) or hard
// links (copied).
func populateXFS(ctx context.Context, path, rootfs string) ([]driver.PathMode, error) {
	proto, err := os.CreateTemp(filepath.Dir(path), "proto-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(proto.Name())
	p := &protofile{w: bufio.NewWriter(proto)}
	err = p.write(rootfs)
	if cerr := proto.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return p.modes, run(ctx, "mkfs.xfs", "-q", "-f", "-L", "berth-root", "-p", proto.Name(), path)
}

// protofile writes an xfs protofile (see mkfs.xfs(8)) and gathers the
// modes it cannot hold.
type protofile struct {
	w     *bufio.Writer
	modes []driver.PathMode
}

// write describes the tree under rootfs.
func (p *protofile) write(rootfs string) error {
	fmt.Fprintln(p.w, "berth")
	fmt.Fprintln(p.w, "0 0")
	rootFI, err := os.Lstat(rootfs)
	if err != nil {
		return err
	}
	fmt.Fprintln(p.w, protoHead(rootFI))
	if err := p.walk(rootfs, "", 1); err != nil {
		return err
	}
	fmt.Fprintln(p.w, "$")
	return p.w.Flush()
}

// protoHead is an entry's type, setid flags, mode and owner
// ("-u-755 0 0"), or "" for what a protofile cannot hold (sockets).
func protoHead(fi fs.FileInfo) string {
	st := fi.Sys().(*syscall.Stat_t)
	m := fi.Mode()
	t := "-"
	switch {
	case m.IsDir():
		t = "d"
	case m&fs.ModeSymlink != 0:
		t = "l"
	case m&fs.ModeCharDevice != 0:
		t = "c"
	case m&fs.ModeDevice != 0:
		t = "b"
	case m&fs.ModeNamedPipe != 0:
		t = "p"
	case m.IsRegular():
	default:
		return "" // sockets
	}
	u, g := "-", "-"
	if m&fs.ModeSetuid != 0 {
		u = "u"
	}
	if m&fs.ModeSetgid != 0 {
		g = "g"
	}
	return fmt.Sprintf("%s%s%s%03o %d %d", t, u, g, m.Perm(), st.Uid, st.Gid)
}

// walk describes dir's entries (rel under the root) at depth.
func (p *protofile) walk(dir, rel string, depth int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.ContainsAny(name, " \t\n$") {
			return fmt.Errorf("%s: names with blanks or $ cannot go on an xfs root disk: %w", filepath.Join(rel, name), errdefs.ErrInvalidArgument)
		}
		if err := p.entry(filepath.Join(dir, name), filepath.Join(rel, name), name, depth); err != nil {
			return err
		}
	}
	return nil
}

// entry describes one entry, and a directory's contents after it.
func (p *protofile) entry(full, rel, name string, depth int) error {
	fi, err := os.Lstat(full)
	if err != nil {
		return err
	}
	head := protoHead(fi)
	if head == "" {
		return nil
	}
	indent := strings.Repeat(" ", depth)
	switch head[0] {
	case '-':
		fmt.Fprintf(p.w, "%s%s %s %s\n", indent, name, head, full)
	case 'l':
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		if strings.ContainsAny(target, " \t\n") {
			return fmt.Errorf("%s: symlink target with blanks: %w", rel, errdefs.ErrInvalidArgument)
		}
		fmt.Fprintf(p.w, "%s%s %s %s\n", indent, name, head, target)
	case 'b', 'c':
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(p.w, "%s%s %s %d %d\n", indent, name, head, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case 'p':
		fmt.Fprintf(p.w, "%s%s %s\n", indent, name, head)
	case 'd':
		if fi.Mode()&fs.ModeSticky != 0 {
			p.modes = append(p.modes, driver.PathMode{Path: rel, Mode: fi.Mode()})
		}
		fmt.Fprintf(p.w, "%s%s %s\n", indent, name, head)
		if err := p.walk(full, rel, depth+1); err != nil {
			return err
		}
		fmt.Fprintf(p.w, "%s$\n", indent)
	}
	return nil
}

// hasCapability reports whether this process holds cap in its effective
// set (a sandbox may lack CAP_SYS_RESOURCE, which ext4's online resize
// needs).
func hasCapability(cap int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[cap/32].Effective&(1<<(uint(cap)%32)) != 0
}
