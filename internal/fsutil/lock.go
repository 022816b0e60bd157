package fsutil

import (
	"os"

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
}

// LockFile takes an exclusive flock on path (created if needed) across
// processes and returns the function that lets go.
func LockFile(path string, opts LockOptions) (func(), error) {
	how := unix.LOCK_EX
	if opts.NoWait {
		how |= unix.LOCK_NB
	}
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), how); err != nil {
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

// Lock is LockFile waiting for the lock, keeping the file.
func Lock(path string) (func(), error) { return LockFile(path, LockOptions{}) }
