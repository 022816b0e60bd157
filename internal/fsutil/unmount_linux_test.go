package fsutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func TestUnmount(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	mp := filepath.Join(dir, "mp")
	if err := os.Mkdir(mp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(mp); err != nil {
		t.Fatalf("not a mount point: %v", err)
	}
	if err := Unmount(filepath.Join(dir, "absent")); err != nil {
		t.Fatalf("absent: %v", err)
	}
	for range 2 { // stacked
		if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	// A busy mount: a directory open in it.
	busy, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := Unmount(mp); err != nil {
		t.Fatal(err)
	}
	if ok, err := mountinfo.Mounted(mp); err != nil || ok {
		t.Fatalf("still mounted: %v %v", ok, err)
	}
}
