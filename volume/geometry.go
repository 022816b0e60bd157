package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"math/bits"
)

// The geometry checks below read the numbers a superblock declares (block
// size, counts, where the parts lie), check them against each other and
// against the device, and return the filesystem's size in bytes. Every
// number is the tenant's: arithmetic is done in uint64 and compares by
// division, never by a product that could wrap.

// errShort is returned when the superblock area cannot be read, which match
// has already ruled out; it keeps a geometry check safe on its own.
var errShort = errors.New("superblock area is cut short")

// devBytes is the device size as an unsigned count.
func devBytes(size int64) uint64 {
	if size < 0 {
		return 0
	}
	return uint64(size)
}

// fitErr reports, with the numbers, when n units of unit bytes (what)
// do not fit in size bytes; a unit of 1 means n is in bytes.
func fitErr(n uint64, what string, unit, size uint64) error {
	if unit != 0 && n <= size/unit {
		return nil
	}
	if unit == 1 {
		return fmt.Errorf("superblock claims %d bytes but the device holds %d bytes", n, size)
	}
	total := "more than 2^64 bytes"
	if hi, lo := bits.Mul64(n, unit); hi == 0 {
		total = fmt.Sprintf("%d bytes", lo)
	}
	return fmt.Errorf("superblock claims %d %s of %d bytes (%s) but the device holds %d bytes", n, what, unit, total, size)
}

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

// xfs (superblock at 0, big-endian). The kernel's xfs_validate_sb_common,
// plus the sections it would look for on other devices: berth mounts the
// data device alone, so the log must be internal and there is no realtime
// section.
func xfsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	sb := read(r, size, 0, 512)
	if sb == nil {
		return 0, errShort
	}
	be := binary.BigEndian
	bs, blockLog := uint64(be.Uint32(sb[4:])), sb[120]
	if !isPow2(bs) || bs < 512 || bs > 65536 {
		return 0, fmt.Errorf("block size %d (want a power of two from 512 to 65536)", bs)
	}
	if blockLog > 16 || bs != 1<<blockLog {
		return 0, fmt.Errorf("block size %d but block log %d", bs, blockLog)
	}
	sect, sectLog := uint64(be.Uint16(sb[102:])), sb[121]
	if !isPow2(sect) || sect < 512 || sect > 32768 || sect > bs {
		return 0, fmt.Errorf("sector size %d (want a power of two from 512 to 32768, at most the block size %d)", sect, bs)
	}
	if sectLog > 15 || sect != 1<<sectLog {
		return 0, fmt.Errorf("sector size %d but sector log %d", sect, sectLog)
	}
	inode, inodeLog := uint64(be.Uint16(sb[104:])), sb[122]
	if !isPow2(inode) || inode < 256 || inode > 2048 {
		return 0, fmt.Errorf("inode size %d (want a power of two from 256 to 2048)", inode)
	}
	if inodeLog > 11 || inode != 1<<inodeLog {
		return 0, fmt.Errorf("inode size %d but inode log %d", inode, inodeLog)
	}
	if perBlock := uint64(be.Uint16(sb[106:])); perBlock != (bs+inode-1)/inode {
		return 0, fmt.Errorf("%d inodes per block with %d-byte blocks and %d-byte inodes", perBlock, bs, inode)
	}

	dblocks := be.Uint64(sb[8:])
	agblocks, agcount := uint64(be.Uint32(sb[84:])), uint64(be.Uint32(sb[88:]))
	if agcount == 0 {
		return 0, errors.New("no allocation groups (agcount 0)")
	}
	// Allocation groups hold 16 MiB to 1 TiB.
	if agblocks*bs < 1<<24 || agblocks*bs > 1<<40 {
		return 0, fmt.Errorf("allocation groups of %d blocks of %d bytes (want 16 MiB to 1 TiB)", agblocks, bs)
	}
	if agLog := uint64(sb[124]); agLog != uint64(bits.Len64(agblocks-1)) {
		return 0, fmt.Errorf("allocation group block log %d for %d blocks", agLog, agblocks)
	}
	if err := fitErr(dblocks, "blocks", bs, devBytes(size)); err != nil {
		return 0, err
	}
	// Both products fit: agcount and agblocks are below 2^32. The last
	// group is partial but holds at least 64 blocks.
	if dblocks > agcount*agblocks || dblocks < (agcount-1)*agblocks+64 {
		return 0, fmt.Errorf("%d data blocks in %d allocation groups of %d blocks", dblocks, agcount, agblocks)
	}
	if rblocks := be.Uint64(sb[16:]); rblocks != 0 {
		return 0, fmt.Errorf("a realtime section of %d blocks, on a device berth does not mount", rblocks)
	}
	logStart, logBlocks := be.Uint64(sb[48:]), uint64(be.Uint32(sb[96:]))
	if logStart == 0 {
		return 0, errors.New("an external log (sb_logstart 0), on a device berth does not mount")
	}
	// An internal log lies in one allocation group; its start is an AG
	// number and a block in it.
	agLog := sb[124]
	agno, agbno := logStart>>agLog, logStart&(1<<agLog-1)
	if logBlocks == 0 || agno >= agcount || agbno >= agblocks || logBlocks > agblocks-agbno ||
		agno*agblocks+agbno+logBlocks > dblocks {
		return 0, fmt.Errorf("internal log of %d blocks at block %d of allocation group %d lies outside the %d data blocks", logBlocks, agbno, agno, dblocks)
	}
	return dblocks * bs, nil
}

// btrfs (superblock at 64 KiB, little-endian). One device only: the
// superblock's device item must fit this device.
func btrfsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	sb := read(r, size, 0x10000, 0x100)
	if sb == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	if at := le.Uint64(sb[0x30:]); at != 0x10000 {
		return 0, fmt.Errorf("superblock says it lies at %d, not 65536", at)
	}
	if n := le.Uint64(sb[0x88:]); n != 1 {
		return 0, fmt.Errorf("%d devices, berth mounts one", n)
	}
	sector, node := uint64(le.Uint32(sb[0x90:])), uint64(le.Uint32(sb[0x94:]))
	if !isPow2(sector) || sector < 4096 || sector > 65536 {
		return 0, fmt.Errorf("sector size %d (want a power of two from 4096 to 65536)", sector)
	}
	if !isPow2(node) || node < sector || node > 65536 {
		return 0, fmt.Errorf("node size %d (want a power of two from the sector size %d to 65536)", node, sector)
	}
	// The filesystem's size, and its one device's as the device item
	// records it (what the kernel checks against the device).
	total := max(le.Uint64(sb[0x70:]), le.Uint64(sb[0xc9+8:]))
	if err := fitErr(total, "bytes", 1, devBytes(size)); err != nil {
		return 0, err
	}
	return total, nil
}

// vfat: the BIOS parameter block's total sectors, and the reserved area,
// FATs and root directory inside them.
func vfatGeometry(r io.ReaderAt, size int64) (uint64, error) {
	bs := read(r, size, 0, 512)
	if bs == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	bps := uint64(le.Uint16(bs[11:]))
	if !isPow2(bps) || bps < 512 || bps > 4096 {
		return 0, fmt.Errorf("sector size %d (want a power of two from 512 to 4096)", bps)
	}
	total := uint64(le.Uint16(bs[19:]))
	if total == 0 {
		total = uint64(le.Uint32(bs[32:]))
	}
	fatSize := uint64(le.Uint16(bs[22:]))
	if fatSize == 0 {
		fatSize = uint64(le.Uint32(bs[36:]))
	}
	if total == 0 || fatSize == 0 {
		return 0, fmt.Errorf("%d sectors, FATs of %d sectors", total, fatSize)
	}
	if err := fitErr(total, "sectors", bps, devBytes(size)); err != nil {
		return 0, err
	}
	// All below 2^32 times small factors: no wrap.
	meta := uint64(le.Uint16(bs[14:])) + uint64(bs[16])*fatSize + (uint64(le.Uint16(bs[17:]))*32+bps-1)/bps
	if meta >= total {
		return 0, fmt.Errorf("reserved sectors, FATs and root directory take %d of %d sectors", meta, total)
	}
	return total * bps, nil
}

// exfat: the boot sector's volume length, and the FATs and cluster heap
// inside it (the kernel's exfat_read_boot_sector).
func exfatGeometry(r io.ReaderAt, size int64) (uint64, error) {
	bs := read(r, size, 0, 512)
	if bs == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	sectBits, clusBits, fats := uint64(bs[108]), uint64(bs[109]), uint64(bs[110])
	if sectBits < 9 || sectBits > 12 {
		return 0, fmt.Errorf("sector size log %d (want 9 to 12)", sectBits)
	}
	if clusBits > 25-sectBits {
		return 0, fmt.Errorf("sectors per cluster log %d (at most %d)", clusBits, 25-sectBits)
	}
	if fats != 1 && fats != 2 {
		return 0, fmt.Errorf("%d FATs (want 1 or 2)", fats)
	}
	length := le.Uint64(bs[72:])
	if err := fitErr(length, "sectors", 1<<sectBits, devBytes(size)); err != nil {
		return 0, err
	}
	fatOff, fatLen := uint64(le.Uint32(bs[80:])), uint64(le.Uint32(bs[84:]))
	heapOff, clusters := uint64(le.Uint32(bs[88:])), uint64(le.Uint32(bs[92:]))
	if fatLen<<sectBits < (clusters+2)*4 {
		return 0, fmt.Errorf("FAT of %d sectors for %d clusters", fatLen, clusters)
	}
	if heapOff < fatOff+fatLen*fats {
		return 0, fmt.Errorf("cluster heap at sector %d overlaps the FATs (%d sectors from %d)", heapOff, fatLen*fats, fatOff)
	}
	if heapOff+clusters<<clusBits > length {
		return 0, fmt.Errorf("cluster heap of %d clusters of %d sectors from sector %d ends past the %d-sector volume", clusters, uint64(1)<<clusBits, heapOff, length)
	}
	return length << sectBits, nil
}

// ntfs: the boot sector's total sectors, and the MFT and its mirror inside
// them.
func ntfsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	bs := read(r, size, 0, 512)
	if bs == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	bps := uint64(le.Uint16(bs[11:]))
	if !isPow2(bps) || bps < 256 || bps > 4096 {
		return 0, fmt.Errorf("sector size %d (want a power of two from 256 to 4096)", bps)
	}
	var spc uint64
	switch b := bs[13]; {
	case b >= 1 && b <= 0x80:
		spc = uint64(b)
	case b >= 0xF4: // a negative shift: 2^(256-b) sectors
		spc = 1 << (256 - uint64(b))
	}
	if !isPow2(spc) {
		return 0, fmt.Errorf("sectors per cluster byte %#x", bs[13])
	}
	total := le.Uint64(bs[40:])
	if err := fitErr(total, "sectors", bps, devBytes(size)); err != nil {
		return 0, err
	}
	clusters := total / spc
	if mft, mirr := le.Uint64(bs[48:]), le.Uint64(bs[56:]); mft >= clusters || mirr >= clusters {
		return 0, fmt.Errorf("MFT at cluster %d and its mirror at %d, past the %d clusters", mft, mirr, clusters)
	}
	return total * bps, nil
}

// squashfs: bytes_used must fit the device (as the kernel checks), its
// block size must match its log, and its tables must lie inside.
func squashfsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	sb := read(r, size, 0, 96)
	if sb == nil {
		return 0, errShort
	}
	if string(sb[:4]) != "hsqs" {
		return 0, fmt.Errorf("a big-endian superblock (version %d), which the kernel does not mount", binary.BigEndian.Uint16(sb[28:]))
	}
	le := binary.LittleEndian
	block, blockLog := uint64(le.Uint32(sb[12:])), uint64(le.Uint16(sb[22:]))
	if !isPow2(block) || block < 4096 || block > 1<<20 || blockLog > 20 || block != 1<<blockLog {
		return 0, fmt.Errorf("block size %d with block log %d (want a power of two from 4096 to 1 MiB, and its log)", block, blockLog)
	}
	used := le.Uint64(sb[40:])
	if err := fitErr(used, "bytes", 1, devBytes(size)); err != nil {
		return 0, err
	}
	inodes, dirs, ids := le.Uint64(sb[64:]), le.Uint64(sb[72:]), le.Uint64(sb[48:])
	if inodes >= dirs || dirs >= used || ids >= used {
		return 0, fmt.Errorf("inode table at %d, directory table at %d, id table at %d in %d bytes", inodes, dirs, ids, used)
	}
	return used, nil
}

// erofs (superblock at 1024, little-endian): the block count (48 bits with
// the 48bit feature) must fit the device, and all of it be on this one.
func erofsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	sb := read(r, size, 1024, 128)
	if sb == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	blkBits := uint64(sb[12])
	if blkBits < 9 || blkBits > 16 {
		return 0, fmt.Errorf("block size log %d (want 9 to 16)", blkBits)
	}
	const incompat48bit = 0x80
	blocks := uint64(le.Uint32(sb[36:]))
	if le.Uint32(sb[80:])&incompat48bit != 0 {
		blocks |= uint64(le.Uint16(sb[14:])) << 32
	}
	if blocks == 0 {
		return 0, errors.New("superblock claims 0 blocks")
	}
	if n := le.Uint16(sb[86:]); n != 0 {
		return 0, fmt.Errorf("%d extra devices, berth mounts one", n)
	}
	if err := fitErr(blocks, "blocks", 1<<blkBits, devBytes(size)); err != nil {
		return 0, err
	}
	return blocks << blkBits, nil
}

// iso9660: the primary volume descriptor's volume space size and logical
// block size, and the root directory inside the volume.
func iso9660Geometry(r io.ReaderAt, size int64) (uint64, error) {
	var pvd []byte
	for off := int64(0x8000); off < 0x8000+16*2048; off += 2048 {
		vd := read(r, size, off, 2048)
		if vd == nil {
			return 0, errShort
		}
		if vd[0] == 1 {
			pvd = vd
			break
		}
	}
	if pvd == nil {
		return 0, errShort
	}
	le := binary.LittleEndian
	block := uint64(le.Uint16(pvd[128:]))
	if block != 512 && block != 1024 && block != 2048 {
		return 0, fmt.Errorf("logical block size %d (want 512, 1024 or 2048)", block)
	}
	blocks := uint64(le.Uint32(pvd[80:]))
	if err := fitErr(blocks, "blocks", block, devBytes(size)); err != nil {
		return 0, err
	}
	if root := uint64(le.Uint32(pvd[156+2:])); root >= blocks {
		return 0, fmt.Errorf("root directory at block %d, past the %d-block volume", root, blocks)
	}
	return blocks * block, nil
}
