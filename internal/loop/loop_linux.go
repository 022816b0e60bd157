package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Device is an attached loop device. While the Device's file is open the
// loop device stays bound, even with autoclear.
type Device struct {
	// Path is /dev/loopN.
	Path string
	// File is the open loop device.
	File *os.File
}

// Options tune Attach.
type Options struct {
	ReadOnly bool
	// Autoclear frees the loop device when its last user (an open file or
	// a mount) goes away, so a crash never leaks it.
	Autoclear bool
}

// Attach binds backing (an open regular file) to a free loop device. It
// never scans partitions: a tenant's partition table must not make the
// kernel create more devices.
func Attach(backing *os.File, opts Options) (*Device, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop-control: %w", err)
	}
	defer ctl.Close()
	flags := os.O_RDWR
	var loFlags uint32
	if opts.ReadOnly {
		flags = os.O_RDONLY
		loFlags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.Autoclear {
		loFlags |= unix.LO_FLAGS_AUTOCLEAR
	}
	// Another process may take the free device between GET_FREE and
	// CONFIGURE: retry with the next one.
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		dev, err := openDevice(path, n, flags)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = loFlags
		copy(cfg.Info.File_name[:], backing.Name())
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return &Device{Path: path, File: dev}, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("LOOP_CONFIGURE %s: %w", path, err)
		}
	}
	return nil, fmt.Errorf("no free loop device after 16 attempts: %w", unix.EBUSY)
}

// openDevice opens /dev/loopN, creating the node if udev did not.
func openDevice(path string, n, flags int) (*os.File, error) {
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("mknod %s: %w", path, err)
		}
		f, err = os.OpenFile(path, flags, 0)
	}
	return f, err
}

// Detach sets the device to clear at its last close (LOOP_CLR_FD) and
// closes it: it is unbound now unless a mount or another opener still
// holds it, and later when that lets go. Free waits for that.
func (d *Device) Detach() error {
	err := unix.IoctlSetInt(int(d.File.Fd()), unix.LOOP_CLR_FD, 0)
	cerr := d.File.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", d.Path, err)
	}
	return cerr
}

// Close drops this process's reference; an autoclear device is freed once
// nothing else (a mount) holds it.
func (d *Device) Close() error { return d.File.Close() }

// Backing returns the loop devices currently bound, mapped to their
// backing file paths, from sysfs.
func Backing() (map[string]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err != nil {
			continue // not bound
		}
		out["/dev/"+e.Name()] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// BackedBy lists the loop devices whose backing file is the file with
// device dev and inode ino, whatever path it was attached by (a hard link,
// a bind mount).
func BackedBy(dev, ino uint64) ([]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/block", e.Name(), "loop")); err != nil {
			continue // not bound
		}
		path := "/dev/" + e.Name()
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err == nil && info.Device == dev && info.Inode == ino {
			out = append(out, path)
		}
	}
	return out, nil
}
