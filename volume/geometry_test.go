package volume

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// mountable are the image kinds (makeImage) of every format Probe would let
// a policy mount, with variants whose geometry differs.
var mountable = []string{"ext2", "ext3", "ext4", "ext4-4k", "ext4-bigalloc", "xfs", "btrfs", "vfat", "exfat", "ntfs", "squashfs", "erofs", "iso9660"}

// Each format, made by its own mkfs, probes with the size it declares;
// cut shorter than that (by one byte, by half), it is refused for its
// geometry, with the numbers.
func TestProbeRefusesTruncated(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range mountable {
		t.Run(kind, func(t *testing.T) {
			p := makeImage(t, dir, kind)
			fs, err := probeFile(t, p)
			require.NoError(t, err, "the image as mkfs made it")
			require.Positive(t, fs.Size)
			for _, cut := range []int64{fs.Size - 1, fs.Size / 2} {
				require.NoError(t, os.Truncate(p, cut))
				_, err := probeFile(t, p)
				require.ErrorIs(t, err, ErrGeometry, "cut to %d of %d bytes", cut, fs.Size)
				require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
				require.Contains(t, err.Error(), fs.Type+": superblock claims ")
				require.Contains(t, err.Error(), fmt.Sprintf(" but the device holds %d bytes: bad geometry", cut))
			}
			if kind == "ext4" {
				require.EqualError(t, func() error { _, err := probeFile(t, p); return err }(),
					"ext4: superblock claims 32768 blocks of 1024 bytes (33554432 bytes) but the device holds 16777216 bytes: bad geometry: invalid argument")
			}
		})
	}
}

// patched reads as r with the bytes at off replaced by b.
type patched struct {
	r   io.ReaderAt
	off int64
	b   []byte
}

func (p patched) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	lo, hi := max(off, p.off), min(off+int64(n), p.off+int64(len(p.b)))
	if lo < hi {
		copy(b[lo-off:hi-off], p.b[lo-p.off:hi-p.off])
	}
	return n, err
}

// superblockAt is where each kind's superblock (or primary volume
// descriptor) lies, and its length.
var superblockAt = map[string][2]int64{
	"ext2": {1024, 1024}, "ext3": {1024, 1024}, "ext4": {1024, 1024}, "ext4-4k": {1024, 1024}, "ext4-bigalloc": {1024, 1024},
	"xfs": {0, 512}, "btrfs": {0x10000, 0x1000}, "vfat": {0, 512}, "exfat": {0, 512}, "ntfs": {0, 512},
	"squashfs": {0, 96}, "erofs": {1024, 128}, "iso9660": {0x8000, 2048},
}

// Superblocks edited by hand, each in one field, from images their mkfs
// made: every edit is refused as bad geometry, naming the field's numbers.
func TestProbeGeometryFields(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	u16 := func(at int, v uint16) func([]byte) { return func(b []byte) { le.PutUint16(b[at:], v) } }
	u32 := func(at int, v uint32) func([]byte) { return func(b []byte) { le.PutUint32(b[at:], v) } }
	u64 := func(at int, v uint64) func([]byte) { return func(b []byte) { le.PutUint64(b[at:], v) } }
	b16 := func(at int, v uint16) func([]byte) { return func(b []byte) { be.PutUint16(b[at:], v) } }
	b32 := func(at int, v uint32) func([]byte) { return func(b []byte) { be.PutUint32(b[at:], v) } }
	b64 := func(at int, v uint64) func([]byte) { return func(b []byte) { be.PutUint64(b[at:], v) } }
	u8 := func(at int, v byte) func([]byte) { return func(b []byte) { b[at] = v } }
	const huge = "(more than 2^64 bytes)"
	dir, images := t.TempDir(), map[string]string{}
	for _, tc := range []struct {
		kind, name string
		edit       func(sb []byte)
		want       string
	}{
		// ext4 at 32 MiB: 32768 1 KiB blocks from block 1, 4 groups of
		// 8192 blocks and 2048 inodes of 256 bytes, 64bit.
		{"ext4", "block size log 7", u32(24, 7), "block size log 7 is out of range"},
		{"ext4", "block size log 2^32-1", u32(24, 1<<32-1), "block size log 4294967295 is out of range"},
		{"ext4", "blocks past the device", u32(4, 1<<32-1), "superblock claims 4294967295 blocks of 1024 bytes (4398046510080 bytes) but the device holds 33554432 bytes"},
		{"ext4", "64bit high blocks count", u32(0x150, 1<<32-1), huge},
		{"ext4", "no blocks", u32(4, 0), "superblock claims 0 blocks, none past the first data block 1"},
		{"ext4", "first data block 0 with 1 KiB blocks", u32(20, 0), "first data block 0 with 1024-byte blocks (want 1)"},
		{"ext4", "first data block past the filesystem", u32(20, 1<<32-1), "first data block 4294967295"},
		{"ext4", "zero blocks per group", u32(32, 0), "0 blocks per group (want 1 to 8192)"},
		{"ext4", "blocks per group past 8 per byte of a block", u32(32, 8193), "8193 blocks per group (want 1 to 8192)"},
		{"ext4", "cluster size without bigalloc", u32(28, 2), "cluster size log 2 differs from block size log 0"},
		{"ext4", "inodes count mismatch", u32(0, 8193), "8193 inodes but 4 groups of 2048 inodes (8192)"},
		{"ext4", "zero inodes per group", u32(40, 0), "0 inodes per group (want 4 to 8192)"},
		{"ext4", "inodes per group past 8 per byte of a block", u32(40, 8193), "8193 inodes per group"},
		{"ext4", "inode size not a power of two", u16(88, 384), "inode size 384"},
		{"ext4", "inode size past the block size", u16(88, 2048), "inode size 2048"},
		{"ext4", "inode size under 128", u16(88, 64), "inode size 64"},
		{"ext4", "group descriptor size", u16(0xFE, 48), "group descriptor size 48"},
		{"ext4", "reserved descriptor blocks", u16(0xCE, 1000), "1000 reserved group descriptor blocks (at most 256)"},
		{"ext2", "zero blocks per group", u32(32, 0), "0 blocks per group"},
		{"ext3", "inodes count mismatch", u32(0, 1), "1 inodes but 4 groups"},
		{"ext4-4k", "first data block 1 with 4 KiB blocks", u32(20, 1), "first data block 1 with 4096-byte blocks (want 0)"},
		{"ext4-4k", "blocks per group past 8 per byte of a block", u32(32, 32769), "32769 blocks per group (want 1 to 32768)"},
		// bigalloc: 1 KiB blocks, 16 KiB clusters, 8192 clusters
		// (131072 blocks) per group.
		{"ext4-bigalloc", "clusters per group past 8 per byte of a block", u32(36, 8193), "8193 clusters per group (want 1 to 8192)"},
		{"ext4-bigalloc", "blocks per group not the clusters'", u32(32, 8192), "8192 blocks per group but 8192 clusters of 16 blocks"},
		{"ext4-bigalloc", "cluster size log out of range", u32(28, 21), "cluster size log 21"},

		// xfs at 320 MiB: 81920 4 KiB blocks in 4 groups of 20480 (log
		// 15), 512-byte sectors and inodes, an internal log of 16384
		// blocks in group 2.
		{"xfs", "agcount 0", b32(88, 0), "no allocation groups (agcount 0)"},
		{"xfs", "block log mismatch", u8(120, 13), "block size 4096 but block log 13"},
		{"xfs", "block log 255", u8(120, 255), "block size 4096 but block log 255"},
		{"xfs", "block size not a power of two", b32(4, 1000), "block size 1000"},
		{"xfs", "block size 2 GiB", b32(4, 1<<31), "block size 2147483648"},
		{"xfs", "sector log mismatch", u8(121, 10), "sector size 512 but sector log 10"},
		{"xfs", "sector size past the block size", b16(102, 8192), "sector size 8192"},
		{"xfs", "inode size 128", b16(104, 128), "inode size 128"},
		{"xfs", "inode log mismatch", u8(122, 10), "inode size 512 but inode log 10"},
		{"xfs", "inodes per block", b16(106, 9), "9 inodes per block"},
		{"xfs", "tiny allocation groups", b32(84, 16), "allocation groups of 16 blocks of 4096 bytes"},
		{"xfs", "allocation group log mismatch", u8(124, 16), "allocation group block log 16 for 20480 blocks"},
		{"xfs", "blocks past the device", b64(8, 81921), "superblock claims 81921 blocks of 4096 bytes (335548416 bytes) but the device holds 335544320 bytes"},
		{"xfs", "blocks past 2^64 bytes", b64(8, 1<<62), huge},
		{"xfs", "blocks past the last group", b32(88, 3), "81920 data blocks in 3 allocation groups of 20480 blocks"},
		{"xfs", "a last group too small", b64(8, 3*20480+10), "61450 data blocks in 4 allocation groups"},
		{"xfs", "external log", b64(48, 0), "external log"},
		{"xfs", "log past its group", b32(96, 20480), "internal log of 20480 blocks at block 6 of allocation group 2"},
		{"xfs", "log in a group that is not there", b64(48, 4<<15|6), "allocation group 4 lies outside"},
		{"xfs", "realtime section", b64(16, 100), "realtime section of 100 blocks"},

		// btrfs at 128 MiB, one device.
		{"btrfs", "superblock elsewhere", u64(0x30, 0), "superblock says it lies at 0"},
		{"btrfs", "two devices", u64(0x88, 2), "2 devices"},
		{"btrfs", "sector size", u32(0x90, 1000), "sector size 1000"},
		{"btrfs", "node size under the sector size", u32(0x94, 2048), "node size 2048"},
		{"btrfs", "size past the device", u64(0x70, 1<<64-1), "superblock claims 18446744073709551615 bytes but the device holds 134217728 bytes"},
		{"btrfs", "device item past the device", u64(0xc9+8, 1<<27+4096), "superblock claims 134221824 bytes"},

		// vfat (FAT16) at 32 MiB: 65536 sectors of 512 bytes.
		{"vfat", "sectors past the device", u32(32, 1<<32-1), "superblock claims 4294967295 sectors of 512 bytes (2199023255040 bytes)"},
		{"vfat", "no sectors", u32(32, 0), "0 sectors"},
		{"vfat", "FATs past the volume", u16(22, 0xFFFF), "reserved sectors, FATs and root directory take"},

		// exfat at 32 MiB: 65536 sectors, FAT of 64 sectors at 2048,
		// 7680 clusters of 8 sectors from 4096.
		{"exfat", "volume past 2^64 bytes", u64(72, 1<<64-1), huge},
		{"exfat", "sector size log", u8(108, 13), "sector size log 13"},
		{"exfat", "cluster size log", u8(109, 17), "sectors per cluster log 17"},
		{"exfat", "three FATs", u8(110, 3), "3 FATs"},
		{"exfat", "FAT too short for the clusters", u32(92, 1<<28), "FAT of 64 sectors for 268435456 clusters"},
		{"exfat", "cluster heap over the FAT", u32(88, 100), "cluster heap at sector 100 overlaps the FATs"},
		{"exfat", "cluster heap past the volume", u32(92, 7681), "ends past the 65536-sector volume"},

		// ntfs at 32 MiB: 65535 sectors, 8 per cluster.
		{"ntfs", "sectors past 2^64 bytes", u64(40, 1<<64-1), huge},
		{"ntfs", "sectors per cluster", u8(13, 0x90), "sectors per cluster byte 0x90"},
		{"ntfs", "MFT past the volume", u64(48, 1<<40), "MFT at cluster 1099511627776"},

		// squashfs: 232 bytes used in a 4096-byte file.
		{"squashfs", "bytes used past the device", u64(40, 4097), "superblock claims 4097 bytes but the device holds 4096 bytes"},
		{"squashfs", "bytes used 2^64-1", u64(40, 1<<64-1), "superblock claims 18446744073709551615 bytes"},
		{"squashfs", "block log mismatch", u16(22, 16), "block size 131072 with block log 16"},
		{"squashfs", "directory table past the end", u64(72, 1000), "directory table at 1000"},

		// erofs: 1 block of 4096 bytes.
		{"erofs", "blocks past the device", u32(36, 1<<32-1), "superblock claims 4294967295 blocks of 4096 bytes"},
		{"erofs", "48-bit blocks past the device", func(b []byte) { le.PutUint32(b[80:], le.Uint32(b[80:])|0x80); le.PutUint16(b[14:], 0xFFFF) }, "superblock claims 281470681743361 blocks"},
		{"erofs", "no blocks", u32(36, 0), "0 blocks"},
		{"erofs", "extra devices", u16(86, 1), "1 extra devices"},

		// iso9660: 175 blocks of 2048 bytes.
		{"iso9660", "volume past the device", u32(80, 1<<32-1), "superblock claims 4294967295 blocks of 2048 bytes"},
		{"iso9660", "logical block size", u16(128, 4096), "logical block size 4096"},
		{"iso9660", "root past the volume", u32(158, 1000), "root directory at block 1000"},
	} {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			p, ok := images[tc.kind]
			if !ok {
				p = makeImage(t, dir, tc.kind)
				images[tc.kind] = p
			}
			f, err := os.Open(p)
			require.NoError(t, err)
			defer f.Close()
			fi, err := f.Stat()
			require.NoError(t, err)
			at := superblockAt[tc.kind]
			sb := make([]byte, at[1])
			_, err = f.ReadAt(sb, at[0])
			require.NoError(t, err)
			good, err := Probe(f, fi.Size())
			require.NoError(t, err, "unedited")
			tc.edit(sb)
			_, err = Probe(patched{f, at[0], sb}, fi.Size())
			require.ErrorIs(t, err, ErrGeometry)
			require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
			require.Contains(t, err.Error(), good.Type+": ")
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// Hand-made superblocks whose geometry passes, in the smallest device that
// holds them: FuzzProbe mutates them to reach every check (small inputs
// also keep the fuzzer's minimization short).
func extSeed() []byte {
	b := make([]byte, 3<<10)
	sb, le := b[1024:], binary.LittleEndian
	le.PutUint32(sb[0:], 16)    // inodes
	le.PutUint32(sb[4:], 3)     // blocks of 1 KiB: boot, superblock, descriptors
	le.PutUint32(sb[20:], 1)    // first data block
	le.PutUint32(sb[32:], 8192) // blocks per group
	le.PutUint32(sb[40:], 16)   // inodes per group
	le.PutUint16(sb[56:], 0xEF53)
	return b
}

func xfsSeed() []byte {
	b := make([]byte, 32<<10)
	be := binary.BigEndian
	copy(b, "XFSB")
	be.PutUint32(b[4:], 512)    // block size
	be.PutUint64(b[8:], 64)     // data blocks: the fewest in a last group
	be.PutUint64(b[48:], 32)    // log start: group 0, block 32
	be.PutUint32(b[84:], 32768) // blocks per group (16 MiB)
	be.PutUint32(b[88:], 1)     // groups
	be.PutUint32(b[96:], 16)    // log blocks
	be.PutUint16(b[102:], 512)  // sector size
	be.PutUint16(b[104:], 256)  // inode size
	be.PutUint16(b[106:], 2)    // inodes per block
	b[120], b[121], b[122], b[123], b[124] = 9, 9, 8, 1, 15
	return b
}

func TestGeometrySeeds(t *testing.T) {
	for name, b := range map[string][]byte{"ext2": extSeed(), "xfs": xfsSeed()} {
		fs, err := Probe(bytes.NewReader(b), int64(len(b)))
		require.NoError(t, err, name)
		require.Equal(t, name, fs.Type)
		require.Equal(t, int64(len(b)), fs.Size)
		_, err = Probe(bytes.NewReader(b[:len(b)-512]), int64(len(b)-512))
		require.ErrorIs(t, err, ErrGeometry, name)
	}
}
