package volume

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// blkidType asks util-linux what the file is, in low-level probe mode (no
// cache), as TYPE or PTTYPE; "" with its exit code when it names nothing
// (2) or finds more than one (8, "ambivalent").
func blkidType(t *testing.T, path string) (string, int) {
	t.Helper()
	if _, err := exec.LookPath("blkid"); err != nil {
		fixture.Require(t, false, "blkid is not installed")
	}
	out, err := exec.Command("blkid", "-p", "-o", "export", path).Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "TYPE="); ok {
			return v, code
		}
		if v, ok := strings.CutPrefix(line, "PTTYPE="); ok {
			return v, code
		}
	}
	return "", code
}

func probeFile(t *testing.T, path string) (Filesystem, error) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	return Probe(f, fi.Size())
}

// Probe names what blkid -p names, for every format it knows, and refuses
// what blkid finds nothing in or finds two things in.
func TestProbeMatchesBlkid(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs", "squashfs", "erofs", "iso9660", "swap", "crypto_LUKS", "dos", "gpt", "zeros", "ext4+iso9660"} {
		t.Run(kind, func(t *testing.T) {
			p := makeImage(t, dir, kind)
			want, code := blkidType(t, p)
			got, err := probeFile(t, p)
			switch kind {
			case "zeros":
				require.Equal(t, 2, code, "blkid finds nothing")
				require.ErrorIs(t, err, ErrNoSignature)
				require.True(t, errdefs.IsInvalidArgument(err))
			case "ext4+iso9660":
				require.Equal(t, 8, code, "blkid calls it ambivalent")
				require.ErrorIs(t, err, ErrAmbiguous)
				require.True(t, errdefs.IsInvalidArgument(err))
			default:
				require.NoError(t, err)
				require.Equal(t, kind, want, "blkid's name for the fixture")
				require.Equal(t, want, got.Type)
				fi, err := os.Stat(p)
				require.NoError(t, err)
				require.LessOrEqual(t, got.Size, fi.Size(), "the filesystem fits its file")
				require.Equal(t, got.Driver != "", got.Size > 0, "mountable formats have a checked size")
			}
		})
	}
}

func TestProbeDrivers(t *testing.T) {
	for typ, driver := range map[string]string{"ext2": "ext4", "ext3": "ext4", "ext4": "ext4", "xfs": "xfs", "swap": "", "crypto_LUKS": "", "dos": ""} {
		require.Equal(t, driver, driverOf(typ), typ)
	}
	require.Contains(t, KnownFilesystems(), "erofs")
	require.Len(t, KnownFilesystems(), len(signatures))
	for _, s := range signatures {
		require.Equal(t, s.driver != "", s.geometry != nil, "%s: every mountable format has its geometry checked", s.name)
	}
}

func TestPolicy(t *testing.T) {
	p := DefaultPolicy()
	require.NoError(t, p.Validate())
	for _, typ := range []string{"ext2", "ext3", "ext4", "xfs"} {
		require.NoError(t, p.Check(Filesystem{Type: typ, Driver: driverOf(typ)}), typ)
	}
	for _, typ := range []string{"btrfs", "vfat", "squashfs", "ntfs", "erofs", "iso9660", "swap", "crypto_LUKS", "dos"} {
		err := p.Check(Filesystem{Type: typ, Driver: driverOf(typ)})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", typ, err)
		require.Contains(t, err.Error(), typ)
	}
	require.NoError(t, p.Allow("btrfs").Check(Filesystem{Type: "btrfs", Driver: "btrfs"}))
	require.Error(t, DefaultPolicy().Check(Filesystem{Type: "btrfs", Driver: "btrfs"}), "Allow copies")
	require.True(t, errdefs.IsInvalidArgument(p.Allow("swap").Validate()))
	require.True(t, errdefs.IsInvalidArgument(p.Allow("ext5").Validate()))
}

func TestParseSpec(t *testing.T) {
	s, err := ParseSpec("/dev/vdb:/data:ro")
	require.NoError(t, err)
	require.Equal(t, Spec{Source: "/dev/vdb", Destination: "/data", ReadOnly: true, Mode: ModeHostMount}, s)
	s, err = ParseSpec("/dev/vdb:/dev/xvdb:raw")
	require.NoError(t, err)
	require.Equal(t, ModeRawBlock, s.Mode)
	s, err = ParseSpec("tmpfs:/scratch:size=64m")
	require.NoError(t, err)
	require.Equal(t, Spec{Destination: "/scratch", Kind: KindTmpfs, TmpfsSize: 64 << 20, Mode: ModeHostMount}, s)
	s, err = ParseSpec("/srv/share:/share:rslave:ro")
	require.NoError(t, err)
	require.Equal(t, Spec{Source: "/srv/share", Destination: "/share", ReadOnly: true, Propagation: PropagationSlave, Mode: ModeHostMount}, s)
	s, err = ParseSpec("/srv/share:/share:rshared")
	require.NoError(t, err)
	require.Equal(t, PropagationShared, s.Propagation)
	for _, bad := range []string{"/x", "/x:/y:rx", "tmpfs:/y:size=lots", "/x:/y:size=1m", "/x:/y:rro"} {
		_, err := ParseSpec(bad)
		require.Truef(t, errdefs.IsInvalidArgument(err), "%q: %v", bad, err)
	}
}

// FuzzProbe: no input makes Probe panic, read out of bounds, or answer
// differently twice; what it names is in KnownFilesystems and fits.
func FuzzProbe(f *testing.F) {
	seed := make([]byte, 0x10100)
	f.Add(seed)
	ext := bytes.Clone(seed)
	ext[1024+56], ext[1024+57] = 0x53, 0xEF
	ext[1024+32] = 1
	f.Add(ext)
	iso := bytes.Clone(seed)
	copy(iso[0x8000:], "\x01CD001\x01")
	f.Add(iso)
	f.Add([]byte("XFSB"))
	f.Add(extSeed())
	f.Add(xfsSeed())
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		a, errA := Probe(r, int64(len(data)))
		b, errB := Probe(r, int64(len(data)))
		if a != b || (errA == nil) != (errB == nil) {
			t.Fatalf("Probe is not deterministic: %v %v / %v %v", a, errA, b, errB)
		}
		if errA == nil {
			found := false
			for _, k := range KnownFilesystems() {
				found = found || k == a.Type
			}
			if !found {
				t.Fatalf("Probe named %q, not a known filesystem", a.Type)
			}
			if a.Size < 0 || a.Size > int64(len(data)) {
				t.Fatalf("%s claims %d bytes of %d, and passed", a.Type, a.Size, len(data))
			}
			return
		}
		if !errdefs.IsInvalidArgument(errA) {
			t.Fatalf("refusal without the invalid-argument class: %v", errA)
		}
	})
}
