package fsutil

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// LockOptions tune LockFile.
type LockOptions struct {
	// NoWait fails at once (EWOULDBLOCK) instead of waiting while another
	// holder has the lock.
	NoWait bool
	// Remove removes the file as the holder lets go; a waiter that then
	// wins the old file finds it gone and locks the path anew, so only the
	// holder of the file at path ever holds the lock and no lock file
	// outlives its holder.
	Remove bool
	// Shared takes a shared lock, which excludes only exclusive holders.
	Shared bool
	// Existing locks a file or directory that must exist already instead
	// of creating a file.
	Existing bool
}

// LockFile takes an flock on path (created if needed) across processes and
// returns the function that lets go. Each call opens its own file
// description, so the lock also serializes goroutines of one process; the
// lock is held until the returned function runs.
func LockFile(path string, opts LockOptions) (func(), error) {
	return LockFileContext(context.Background(), path, opts)
}

// LockFileContext is LockFile waiting only while ctx allows; it returns
// ctx.Err() when ctx ends first.
func LockFileContext(ctx context.Context, path string, opts LockOptions) (func(), error) {
	how := unix.LOCK_EX
	if opts.Shared {
		how = unix.LOCK_SH
	}
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if !opts.Existing {
		flags |= os.O_CREATE
	}
	for {
		f, err := os.OpenFile(path, flags, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flock(ctx, f, how, opts.NoWait); err != nil {
			f.Close()
			return nil, err
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev {
			return func() {
				if opts.Remove {
					_ = os.Remove(path)
				}
				f.Close()
			}, nil
		}
		f.Close()
	}
}

// flock locks f, waiting unless noWait; a wait that ctx can end polls.
func flock(ctx context.Context, f *os.File, how int, noWait bool) error {
	fd := int(f.Fd())
	if noWait {
		return unix.Flock(fd, how|unix.LOCK_NB)
	}
	if ctx.Done() == nil {
		for {
			if err := unix.Flock(fd, how); err != unix.EINTR {
				return err
			}
		}
	}
	for delay := time.Millisecond; ; {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Lock is LockFile waiting for the lock, keeping the file.
func Lock(path string) (func(), error) { return LockFile(path, LockOptions{}) }

// Locked reports whether another holds an exclusive lock on path, an
// existing file or directory; it takes no lock that outlives the call.
func Locked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
}
