package parallels_test

import (
	"path/filepath"
	"testing"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// BenchmarkRunTrue measures create+start+wait+delete of /bin/true on the
// disk-image engine (ext4 and xfs disks) and, in the same run, on the
// embedded engine it builds on: the difference is the cost of the image
// file layer (mkfs -d, loop device, probe, mount; then unmount, removal).
func BenchmarkRunTrue(b *testing.B) {
	fixture.RequireRoot(b)
	rootfs := fixture.BusyboxTB(b)
	engines := []struct {
		name string
		open func(root string) (driver.Runtime, error)
	}{
		{"libcontainer", func(root string) (driver.Runtime, error) { return libcontainer.Open(root) }},
		{"parallels-ext4", func(root string) (driver.Runtime, error) {
			return parallels.Open(root, parallels.WithFilesystem("ext4"), parallels.WithDefaultDiskSize(64<<20))
		}},
		{"parallels-xfs", func(root string) (driver.Runtime, error) {
			return parallels.Open(root, parallels.WithFilesystem("xfs"), parallels.WithDefaultDiskSize(320<<20))
		}},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			root := filepath.Join(fixture.TempDir(b), "state")
			d, err := e.open(root)
			if err != nil {
				b.Fatal(err)
			}
			rt, err := runtime.New(d, runtime.WithStateDir(root))
			if err != nil {
				b.Fatal(err)
			}
			runtimetest.BenchmarkRunTrue(b, rt, func() *runtime.Config {
				return &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/true")}
			})
		})
	}
}
