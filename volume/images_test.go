package volume

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// run runs a command that builds a test image, failing the test (or
// skipping outside CI) when the tool is missing.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		fixture.Require(t, false, name+" is not installed (scripts/setup.sh installs it)")
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
}

func sparse(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return p
}

// makeImage builds an image of the named kind in dir: a format name (as
// blkid says it), a variant of one ("ext4-4k", "ext4-bigalloc"), "zeros"
// for no signature, or "ext4+iso9660" for a polyglot carrying two.
func makeImage(t *testing.T, dir, kind string) string {
	t.Helper()
	const mib = 1 << 20
	p := filepath.Join(dir, kind+".img")
	switch kind {
	case "ext2", "ext3", "ext4":
		// 1 KiB blocks at this size (mke2fs.conf's "small").
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs."+kind, "-q", "-F", p)
	case "ext4-4k":
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", p)
	case "ext4-bigalloc":
		// Groups of 8192 16 KiB clusters: 131072 1 KiB blocks per group.
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs.ext4", "-q", "-F", "-O", "bigalloc", "-C", "16384", p)
	case "xfs":
		sparse(t, dir, kind+".img", 320*mib)
		run(t, "mkfs.xfs", "-q", "-f", p)
	case "btrfs":
		sparse(t, dir, kind+".img", 128*mib)
		run(t, "mkfs.btrfs", "-q", "-f", p)
	case "vfat":
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs.vfat", p)
	case "exfat":
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs.exfat", p)
	case "ntfs":
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkntfs", "-q", "-F", "-Q", p)
	case "swap":
		sparse(t, dir, kind+".img", 8*mib)
		run(t, "mkswap", p)
	case "squashfs", "erofs", "iso9660":
		src := filepath.Join(dir, kind+"-src")
		require.NoError(t, os.MkdirAll(src, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(src, "hello"), []byte("hello\n"), 0o644))
		switch kind {
		case "squashfs":
			run(t, "mksquashfs", src, p, "-quiet", "-noappend")
		case "erofs":
			run(t, "mkfs.erofs", "--quiet", p, src)
		case "iso9660":
			run(t, "genisoimage", "-quiet", "-o", p, src)
		}
	case "crypto_LUKS":
		sparse(t, dir, kind+".img", 32*mib)
		key := filepath.Join(dir, "key")
		require.NoError(t, os.WriteFile(key, []byte("secret"), 0o600))
		run(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", key, p)
	case "dos", "gpt":
		sparse(t, dir, kind+".img", 16*mib)
		cmd := exec.Command("sfdisk", "-q", p)
		cmd.Stdin = strings.NewReader("label: " + kind + "\n,8M\n")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "sfdisk: %s", out)
	case "zeros":
		sparse(t, dir, kind+".img", 16*mib)
	case "ext4+iso9660":
		// An ext4 filesystem with an ISO 9660 volume descriptor written
		// into it: two valid signatures, the classic polyglot.
		sparse(t, dir, kind+".img", 32*mib)
		run(t, "mkfs.ext4", "-q", "-F", p)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte("\x01CD001\x01"), 0x8000)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	case "ext4-corrupt":
		p = makeImage(t, dir, "ext4")
		// Zero the first block group descriptors: the superblock still
		// says ext4, the checker finds the filesystem broken.
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(make([]byte, 4096), 4096)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	default:
		t.Fatalf("unknown image kind %q", kind)
	}
	return p
}
