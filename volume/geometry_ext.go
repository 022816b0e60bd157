package volume

import (
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// ext2/3/4 (superblock at 1024, little-endian). The kernel's checks in
// ext4_fill_super and ext4_check_geometry, done before any mount.
func extGeometry(r io.ReaderAt, size int64) (uint64, error) {
	raw := read(r, size, 1024, 1024)
	if raw == nil {
		return 0, errShort
	}
	sb := extSuper(raw)
	bs, blocks, firstData, err := sb.blocks(devBytes(size))
	if err != nil {
		return 0, err
	}
	bpg, err := sb.blocksPerGroup(bs)
	if err != nil {
		return 0, err
	}
	groups := (blocks-firstData-1)/bpg + 1
	if err := sb.descriptors(bs, blocks, firstData, groups); err != nil {
		return 0, err
	}
	if err := sb.inodes(bs, groups); err != nil {
		return 0, err
	}
	if err := sb.journal(); err != nil {
		return 0, err
	}
	return blocks * bs, nil
}

// extSuper is an ext2/3/4 superblock's 1024 bytes.
type extSuper []byte

const (
	extIncompatMetaBG   = 0x10
	extIncompat64bit    = 0x80
	extRoCompatBigalloc = 0x200
	extCompatHasJournal = 0x4
)

func (sb extSuper) u16(off int) uint64 { return uint64(binary.LittleEndian.Uint16(sb[off:])) }
func (sb extSuper) u32(off int) uint64 { return uint64(binary.LittleEndian.Uint32(sb[off:])) }

func (sb extSuper) incompat(flag uint64) bool { return sb.u32(96)&flag != 0 }
func (sb extSuper) bigalloc() bool            { return sb.u32(100)&extRoCompatBigalloc != 0 }
func (sb extSuper) logBlock() uint64          { return sb.u32(24) }

// blocks returns the block size, the block count (which must fit in
// devSize bytes) and the first data block.
func (sb extSuper) blocks(devSize uint64) (bs, blocks, firstData uint64, err error) {
	if sb.logBlock() > 6 {
		return 0, 0, 0, fmt.Errorf("block size log %d is out of range (0 to 6: 1 KiB to 64 KiB)", sb.logBlock())
	}
	bs = uint64(1024) << sb.logBlock()
	blocks = sb.u32(4)
	if sb.incompat(extIncompat64bit) {
		blocks |= sb.u32(0x150) << 32
	}
	if err := fitErr(blocks, "blocks", bs, devSize); err != nil {
		return 0, 0, 0, err
	}
	firstData = sb.u32(20)
	wantFirst := uint64(0)
	if bs == 1024 && !sb.bigalloc() {
		wantFirst = 1 // the superblock's own block comes first
	}
	if firstData != wantFirst {
		return 0, 0, 0, fmt.Errorf("first data block %d with %d-byte blocks (want %d)", firstData, bs, wantFirst)
	}
	if blocks <= firstData {
		return 0, 0, 0, fmt.Errorf("superblock claims %d blocks, none past the first data block %d", blocks, firstData)
	}
	return bs, blocks, firstData, nil
}

// blocksPerGroup returns the blocks per group, checked against the
// cluster size.
func (sb extSuper) blocksPerGroup(bs uint64) (uint64, error) {
	bpg := sb.u32(32)
	logBlock, logCluster := sb.logBlock(), sb.u32(28)
	if !sb.bigalloc() {
		if logCluster != logBlock {
			return 0, fmt.Errorf("cluster size log %d differs from block size log %d without bigalloc", logCluster, logBlock)
		}
		if bpg == 0 || bpg > 8*bs {
			return 0, fmt.Errorf("%d blocks per group (want 1 to %d)", bpg, 8*bs)
		}
		return bpg, nil
	}
	// Groups count clusters; the kernel caps cluster size at 1 GiB.
	if logCluster < logBlock || logCluster > 20 {
		return 0, fmt.Errorf("cluster size log %d with block size log %d (want %d to 20)", logCluster, logBlock, logBlock)
	}
	cpg := sb.u32(36)
	if cpg == 0 || cpg > 8*bs {
		return 0, fmt.Errorf("%d clusters per group (want 1 to %d)", cpg, 8*bs)
	}
	if bpg != cpg<<(logCluster-logBlock) {
		return 0, fmt.Errorf("%d blocks per group but %d clusters of %d blocks", bpg, cpg, uint64(1)<<(logCluster-logBlock))
	}
	return bpg, nil
}

// descriptors checks the group descriptors' size and that their table
// fits.
func (sb extSuper) descriptors(bs, blocks, firstData, groups uint64) error {
	descSize := uint64(32)
	if sb.incompat(extIncompat64bit) {
		descSize = sb.u16(0xFE)
		if !isPow2(descSize) || descSize < 64 || descSize > 1024 {
			return fmt.Errorf("group descriptor size %d (want a power of two from 64 to 1024)", descSize)
		}
	}
	descPerBlock := bs / descSize
	if groups > 1<<32-descPerBlock {
		return fmt.Errorf("%d block groups is too many", groups)
	}
	if !sb.incompat(extIncompatMetaBG) {
		// The descriptor table follows the superblock in the first group.
		gdt := (groups + descPerBlock - 1) / descPerBlock
		if gdt > blocks-firstData-1 {
			return fmt.Errorf("%d blocks of group descriptors do not fit in %d blocks", gdt, blocks)
		}
	}
	if rgdt := sb.u16(0xCE); rgdt > bs/4 {
		return fmt.Errorf("%d reserved group descriptor blocks (at most %d)", rgdt, bs/4)
	}
	return nil
}

// inodes checks the inode size and count.
func (sb extSuper) inodes(bs, groups uint64) error {
	inodeSize := uint64(128)
	if sb.u32(76) >= 1 {
		inodeSize = sb.u16(88)
		if !isPow2(inodeSize) || inodeSize < 128 || inodeSize > bs {
			return fmt.Errorf("inode size %d (want a power of two from 128 to the block size %d)", inodeSize, bs)
		}
	}
	ipg := sb.u32(40)
	if ipg < bs/inodeSize || ipg > 8*bs {
		return fmt.Errorf("%d inodes per group (want %d to %d)", ipg, bs/inodeSize, 8*bs)
	}
	// groups < 2^32 and ipg <= 2^19: the product cannot wrap.
	if inodes := sb.u32(0); inodes != groups*ipg {
		return fmt.Errorf("%d inodes but %d groups of %d inodes (%d)", inodes, groups, ipg, groups*ipg)
	}
	return nil
}

// journal refuses a journal on another device: it is named by a device
// number (and UUID) the host kernel would open and write, whatever device
// that is; berth mounts one device.
func (sb extSuper) journal() error {
	if sb.u32(92)&extCompatHasJournal == 0 {
		return nil
	}
	inum, dev := sb.u32(0xE0), sb.u32(0xE4)
	if inum == 0 || dev != 0 || !allZero(sb[0xD0:0xE0]) {
		return fmt.Errorf("an external journal (device %d:%d): berth mounts one device", unix.Major(dev), unix.Minor(dev))
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
