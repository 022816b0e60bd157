package fsutil

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLockModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lock")
	if Locked(p) {
		t.Fatal("a missing file is not locked")
	}
	sh1, err := LockFile(p, LockOptions{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	sh2, err := LockFile(p, LockOptions{Shared: true, NoWait: true})
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if Locked(p) {
		t.Fatal("shared holders do not count as exclusive")
	}
	if _, err := LockFile(p, LockOptions{NoWait: true}); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("exclusive beside shared: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := LockFileContext(ctx, p, LockOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting past ctx: %v", err)
	}
	sh1()
	sh2()
	ex, err := LockFile(dir, LockOptions{Existing: true, NoWait: true})
	if err != nil {
		t.Fatalf("lock a directory: %v", err)
	}
	if !Locked(dir) {
		t.Fatal("an exclusive holder is seen")
	}
	ex()
	if Locked(dir) {
		t.Fatal("released")
	}
	if _, err := LockFile(filepath.Join(dir, "missing"), LockOptions{Existing: true}); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Existing on a missing path: %v", err)
	}
}
