package volume_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/volume"
)

// The command-line form of a volume, as berthctl --volume takes it.
func ExampleParseSpec() {
	for _, s := range []string{"/dev/vdb:/data:ro", "tmpfs:/scratch:size=64m", "/dev/vdc:/dev/xvdc:raw", "/dev/vdb"} {
		sp, err := volume.ParseSpec(s)
		if err != nil {
			fmt.Println("invalid argument:", errdefs.IsInvalidArgument(err))
			continue
		}
		fmt.Printf("%q at %s ro=%v mode=%s tmpfs=%d\n", sp.Source, sp.Destination, sp.ReadOnly, sp.Mode, sp.TmpfsSize)
	}
	// Output:
	// "/dev/vdb" at /data ro=true mode=host-mount tmpfs=0
	// "" at /scratch ro=false mode=host-mount tmpfs=67108864
	// "/dev/vdc" at /dev/xvdc ro=false mode=raw-block tmpfs=0
	// invalid argument: true
}

// Probe reads the superblock itself; the policy decides on what it found,
// before anything is mounted. Bytes with no signature are refused.
func ExampleProbe() {
	dir, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(dir)
	policy := volume.DefaultPolicy()
	for _, name := range []string{"ext4.img", "zeros.img"} {
		img := filepath.Join(dir, name)
		f, _ := os.Create(img)
		_ = f.Truncate(16 << 20)
		if name == "ext4.img" {
			if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
				fmt.Println(string(out), err)
				return
			}
		}
		fs, err := volume.Probe(f, 16<<20)
		f.Close()
		if err != nil {
			fmt.Printf("%s: refused (invalid argument: %v)\n", name, errdefs.IsInvalidArgument(err))
			continue
		}
		fmt.Printf("%s: %s of %d bytes, admitted: %v\n", name, fs.Type, fs.Size, policy.Check(fs) == nil)
	}
	// Output:
	// ext4.img: ext4 of 16777216 bytes, admitted: true
	// zeros.img: refused (invalid argument: true)
}

// The whitelist relaxes by name only.
func ExamplePolicy_Allow() {
	vfat := volume.Filesystem{Type: "vfat", Driver: "vfat"}
	fmt.Println("default admits vfat:", volume.DefaultPolicy().Check(vfat) == nil)
	fmt.Println("after Allow(\"vfat\"):", volume.DefaultPolicy().Allow("vfat").Check(vfat) == nil)
	// Output:
	// default admits vfat: false
	// after Allow("vfat"): true
}
