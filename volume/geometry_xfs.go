package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// xfs (superblock at 0, big-endian). The kernel's xfs_validate_sb_common,
// plus the sections it would look for on other devices: berth mounts the
// data device alone, so the log must be internal and there is no realtime
// section.
func xfsGeometry(r io.ReaderAt, size int64) (uint64, error) {
	sb := read(r, size, 0, 512)
	if sb == nil {
		return 0, errShort
	}
	bs, err := xfsSizes(sb)
	if err != nil {
		return 0, err
	}
	be := binary.BigEndian
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

// xfsSizes checks the block, sector and inode sizes and their logs, and
// returns the block size.
func xfsSizes(sb []byte) (uint64, error) {
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
	return bs, nil
}
