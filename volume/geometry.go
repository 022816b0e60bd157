package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
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
