package volume

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/berthrun/berth/internal/fixture"
)

// BenchmarkAttachDetach times a host-mount attach and detach of an ext4
// image (loop device, probe, policy, mount, records; then unmount and loop
// release) against its peer in the same run: mount -o loop and umount -d.
// scripts/bench-volume.sh prints the ratio.
func BenchmarkAttachDetach(b *testing.B) {
	fixture.RequireRoot(b)
	img := filepath.Join(b.TempDir(), "ext4.img")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	_ = f.Truncate(64 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		b.Fatal(string(out))
	}
	b.Run("berth", func(b *testing.B) {
		m, err := OpenManager(filepath.Join(b.TempDir(), "volumes"), DefaultPolicy(), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for b.Loop() {
			if _, err := m.Attach(ctx, "bench", Spec{Source: img, Destination: "/data"}, AttachOptions{}); err != nil {
				b.Fatal(err)
			}
			if err := m.Detach(ctx, "bench", "/data"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mount-loop", func(b *testing.B) {
		mp := b.TempDir()
		for b.Loop() {
			if out, err := exec.Command("mount", "-o", "loop,nosuid,nodev", "-t", "ext4", img, mp).CombinedOutput(); err != nil {
				b.Fatal(string(out))
			}
			if out, err := exec.Command("umount", "-d", mp).CombinedOutput(); err != nil {
				b.Fatal(string(out))
			}
		}
	})
}
