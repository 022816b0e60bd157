package kernfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrKernelInterface is wrapped by every refusal of this package.
var ErrKernelInterface = errors.New("kernel interface filesystem")

// types are the kernel interface filesystems by the names the mount table
// gives them, with their statfs magic where they have one of their own
// (devtmpfs reports tmpfs's, so the mount table decides for it).
var types = map[string]int64{
	"proc":        unix.PROC_SUPER_MAGIC,
	"sysfs":       unix.SYSFS_MAGIC,
	"cgroup":      unix.CGROUP_SUPER_MAGIC,
	"cgroup2":     unix.CGROUP2_SUPER_MAGIC,
	"devtmpfs":    0,
	"devpts":      unix.DEVPTS_SUPER_MAGIC,
	"debugfs":     unix.DEBUGFS_MAGIC,
	"tracefs":     unix.TRACEFS_MAGIC,
	"securityfs":  unix.SECURITYFS_MAGIC,
	"bpf":         unix.BPF_FS_MAGIC,
	"configfs":    0x62656570,
	"fusectl":     0x65735543,
	"pstore":      unix.PSTOREFS_MAGIC,
	"efivarfs":    unix.EFIVARFS_MAGIC,
	"binfmt_misc": unix.BINFMTFS_MAGIC,
	"nsfs":        unix.NSFS_MAGIC,
	"selinuxfs":   unix.SELINUX_MAGIC,
	"smackfs":     unix.SMACK_MAGIC,
	"autofs":      unix.AUTOFS_SUPER_MAGIC,
	"mqueue":      0x19800202,
	"rpc_pipefs":  0x67596969,
	"nfsd":        0x6e667364,
	"xenfs":       0xabba1974,
	"hypfs":       0x687970,
}

// Types lists the kernel interface filesystems, sorted.
func Types() []string {
	out := make([]string, 0, len(types))
	for t := range types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func isKernel(fstype string) bool { _, ok := types[fstype]; return ok }

func byMagic(magic int64) (string, bool) {
	for t, m := range types {
		if m != 0 && m == magic {
			return t, true
		}
	}
	return "", false
}

// TypeOf returns the filesystem type of the mount that holds the open file
// fd, as the mount table names it, found by the file's mount ID.
func TypeOf(fd int) (string, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return "", fmt.Errorf("statx: %w", err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return "", errors.New("statx: the kernel gave no mount ID")
	}
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return uint64(i.ID) != stx.Mnt_id, uint64(i.ID) == stx.Mnt_id
	})
	if err != nil {
		return "", err
	}
	if len(ms) != 1 {
		return "", fmt.Errorf("mount %d is not in this process's mount table", stx.Mnt_id)
	}
	return ms[0].FSType, nil
}

// Check returns an error wrapping ErrKernelInterface, naming the type, when
// the open file fd lies on a kernel interface filesystem.
func Check(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if t, ok := byMagic(int64(st.Type)); ok {
		return fmt.Errorf("%w: %s", ErrKernelInterface, t)
	}
	t, err := TypeOf(fd)
	if err != nil {
		return err
	}
	if isKernel(t) {
		return fmt.Errorf("%w: %s", ErrKernelInterface, t)
	}
	return nil
}

// CheckUnder returns an error wrapping ErrKernelInterface when a mount at
// or below dir (a recursive bind would carry it) is a kernel interface
// filesystem. dir must be a resolved absolute path.
func CheckUnder(dir string) error {
	dir = filepath.Clean(dir)
	var filter mountinfo.FilterFunc
	if dir != "/" { // PrefixFilter("/") matches nothing
		filter = mountinfo.PrefixFilter(dir)
	}
	ms, err := mountinfo.GetMounts(filter)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if isKernel(m.FSType) {
			return fmt.Errorf("%w: %s mounted at %s", ErrKernelInterface, m.FSType, m.Mountpoint)
		}
	}
	return nil
}

// Open opens path, which must already be resolved (no symlink in it), as an
// O_PATH descriptor without following any link, and checks it. The caller
// closes the file.
func Open(path string) (*os.File, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := Check(fd); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}
