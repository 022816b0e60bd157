package volume

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
)

// A signature recognizes one on-disk format from its superblock. Checks go
// beyond the magic number, so that a stray magic in an unrelated place does
// not count; on sound images they name what blkid names. The sizes a
// superblock declares are not part of matching (ext and xfs are named by
// magic, revision and features alone): once a format is the only one
// found, geometry checks them, so a refusal names the format and the
// numbers that are wrong.
type signature struct {
	// name is what Probe reports, as blkid names it (TYPE or PTTYPE).
	name string
	// driver is the kernel filesystem type to mount it with, or "" when it
	// cannot be mounted (swap, LUKS, a partition table).
	driver string
	// match reports whether the bytes hold this format.
	match func(r io.ReaderAt, size int64) bool
	// geometry checks the sizes the superblock declares, against each
	// other and against the device, and returns the filesystem's size in
	// bytes. Every mountable format has one; the others never reach a
	// mount and have none.
	geometry func(r io.ReaderAt, size int64) (uint64, error)
}

// signatures is the table Probe checks, every entry on every probe.
var signatures = []signature{
	{"ext2", "ext4", func(r io.ReaderAt, n int64) bool { return extKind(r, n) == "ext2" }, extGeometry},
	{"ext3", "ext4", func(r io.ReaderAt, n int64) bool { return extKind(r, n) == "ext3" }, extGeometry},
	{"ext4", "ext4", func(r io.ReaderAt, n int64) bool { return extKind(r, n) == "ext4" }, extGeometry},
	{"xfs", "xfs", matchXFS, xfsGeometry},
	{"btrfs", "btrfs", matchBtrfs, btrfsGeometry},
	{"vfat", "vfat", matchVFAT, vfatGeometry},
	{"exfat", "exfat", matchExFAT, exfatGeometry},
	{"ntfs", "ntfs3", matchNTFS, ntfsGeometry},
	{"squashfs", "squashfs", matchSquashfs, squashfsGeometry},
	{"erofs", "erofs", matchEROFS, erofsGeometry},
	{"iso9660", "iso9660", matchISO9660, iso9660Geometry},
	{"swap", "", matchSwap, nil},
	{"crypto_LUKS", "", matchLUKS, nil},
	{"gpt", "", matchGPT, nil},
	{"dos", "", matchMBR, nil},
}

// KnownFilesystems lists every format Probe can name.
func KnownFilesystems() []string {
	out := make([]string, 0, len(signatures))
	for _, s := range signatures {
		out = append(out, s.name)
	}
	sort.Strings(out)
	return out
}

// Filesystem is what Probe found.
type Filesystem struct {
	// Type is the format's name, as blkid reports it (ext4, xfs, vfat,
	// squashfs, crypto_LUKS, dos, gpt...).
	Type string
	// Driver is the kernel type to mount it with explicitly ("ext4" for
	// ext2/ext3/ext4); empty for formats that are not mountable.
	Driver string
	// Size is how many bytes the superblock says the filesystem spans,
	// checked to fit the device; 0 for formats that are not mountable.
	Size int64 `json:",omitempty"`
}

// ErrAmbiguous, ErrNoSignature and ErrGeometry are the ways Probe refuses;
// all are also invalid-argument.
var (
	ErrAmbiguous   = errors.New("more than one on-disk signature (ambiguous)")
	ErrNoSignature = errors.New("no known on-disk signature")
	// ErrGeometry: the superblock's sizes contradict each other or the
	// device (a filesystem larger than its device, a block size out of
	// range, counts that do not add up), which the kernel would refuse
	// only once asked to mount it, if at all.
	ErrGeometry = errors.New("bad geometry")
)

// Probe reads the superblock area of r (size bytes long) and names its
// format. Bytes carrying more than one valid signature are refused, since
// the kernel and the checker might then disagree on what they are; bytes
// with none are refused too. A mountable format's geometry is then checked:
// sizes that contradict each other or do not fit in size bytes are refused
// (ErrGeometry), so that no mount is ever asked to make sense of them. All
// refusals are invalid-argument and name what was found.
func Probe(r io.ReaderAt, size int64) (Filesystem, error) {
	var found []signature
	for _, s := range signatures {
		if s.match(r, size) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return Filesystem{}, fmt.Errorf("%w: %w", ErrNoSignature, errdefs.ErrInvalidArgument)
	case 1:
		s := found[0]
		fs := Filesystem{Type: s.name, Driver: s.driver}
		if s.geometry == nil {
			return fs, nil
		}
		n, err := s.geometry(r, size)
		if err != nil {
			return Filesystem{}, fmt.Errorf("%s: %v: %w: %w", s.name, err, ErrGeometry, errdefs.ErrInvalidArgument)
		}
		fs.Size = int64(n) // at most size
		return fs, nil
	}
	names := make([]string, len(found))
	for i, s := range found {
		names[i] = s.name
	}
	return Filesystem{}, fmt.Errorf("%w (%s): %w", ErrAmbiguous, strings.Join(names, ", "), errdefs.ErrInvalidArgument)
}

// read returns n bytes at off, or nil if they are not all there.
func read(r io.ReaderAt, size, off int64, n int) []byte {
	if off < 0 || off+int64(n) > size {
		return nil
	}
	b := make([]byte, n)
	if got, _ := r.ReadAt(b, off); got < n {
		return nil
	}
	return b
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

// extKind names an ext2/3/4 superblock (at 1024) by its features, as blkid
// does: a journal makes ext3, features only ext4 knows make ext4.
func extKind(r io.ReaderAt, size int64) string {
	sb := read(r, size, 1024, 1024)
	if sb == nil || binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return ""
	}
	le := binary.LittleEndian
	// Block size and group counts are geometry (extGeometry), so that a
	// superblock with this magic and revision is named and then refused
	// for its numbers.
	if le.Uint32(sb[76:]) > 1 /* revision */ {
		return ""
	}
	compat, incompat, roCompat := le.Uint32(sb[92:]), le.Uint32(sb[96:]), le.Uint32(sb[100:])
	const (
		compatJournal         = 0x4
		incompatJournalDev    = 0x8
		incompatExt3Supported = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
		roCompatExt3Supported = 0x1 | 0x2 | 0x4
	)
	if incompat&incompatJournalDev != 0 {
		return "" // an external journal, not a filesystem
	}
	if incompat&^incompatExt3Supported != 0 || roCompat&^roCompatExt3Supported != 0 {
		return "ext4"
	}
	if compat&compatJournal != 0 {
		return "ext3"
	}
	return "ext2"
}

// matchXFS names xfs by its magic; its sizes are geometry (xfsGeometry),
// refused with their numbers.
func matchXFS(r io.ReaderAt, size int64) bool {
	sb := read(r, size, 0, 512)
	return sb != nil && string(sb[:4]) == "XFSB"
}

func matchBtrfs(r io.ReaderAt, size int64) bool {
	b := read(r, size, 0x10040, 8)
	return b != nil && string(b) == "_BHRfS_M"
}

// fatBPB reports whether the boot sector holds a plausible FAT BIOS
// parameter block.
func fatBPB(bs []byte) bool {
	if bs[0] != 0xEB && bs[0] != 0xE9 {
		return false
	}
	le := binary.LittleEndian
	bps, spc := uint64(le.Uint16(bs[11:])), uint64(bs[13])
	reserved, fats, media := le.Uint16(bs[14:]), bs[16], bs[21]
	return isPow2(bps) && bps >= 512 && bps <= 4096 && isPow2(spc) &&
		reserved > 0 && (fats == 1 || fats == 2) && (media >= 0xF8 || media == 0xF0)
}

func matchVFAT(r io.ReaderAt, size int64) bool {
	bs := read(r, size, 0, 512)
	if bs == nil || !fatBPB(bs) {
		return false
	}
	return bytes.HasPrefix(bs[54:], []byte("FAT1")) || bytes.HasPrefix(bs[82:], []byte("FAT32")) ||
		bytes.HasPrefix(bs[54:], []byte("FAT ")) || bytes.HasPrefix(bs[82:], []byte("FAT "))
}

func matchExFAT(r io.ReaderAt, size int64) bool {
	bs := read(r, size, 0, 512)
	return bs != nil && string(bs[3:11]) == "EXFAT   " && bs[510] == 0x55 && bs[511] == 0xAA
}

func matchNTFS(r io.ReaderAt, size int64) bool {
	bs := read(r, size, 0, 512)
	if bs == nil || string(bs[3:11]) != "NTFS    " {
		return false
	}
	bps := uint64(binary.LittleEndian.Uint16(bs[11:]))
	return isPow2(bps) && bps >= 256 && bps <= 4096
}

func matchSquashfs(r io.ReaderAt, size int64) bool {
	sb := read(r, size, 0, 96)
	if sb == nil {
		return false
	}
	switch string(sb[:4]) {
	case "hsqs":
		return binary.LittleEndian.Uint16(sb[28:]) == 4 // major version
	case "sqsh":
		return binary.BigEndian.Uint16(sb[28:]) >= 1
	}
	return false
}

func matchEROFS(r io.ReaderAt, size int64) bool {
	sb := read(r, size, 1024, 128)
	if sb == nil || binary.LittleEndian.Uint32(sb[0:]) != 0xE0F5E1E2 {
		return false
	}
	blkszbits := sb[12]
	return blkszbits >= 9 && blkszbits <= 16
}

func matchISO9660(r io.ReaderAt, size int64) bool {
	// The primary volume descriptor is at sector 16 (32768); its type byte
	// precedes the "CD001" identifier.
	for off := int64(0x8000); off < 0x8000+16*2048; off += 2048 {
		vd := read(r, size, off, 7)
		if vd == nil || string(vd[1:6]) != "CD001" {
			return false
		}
		if vd[0] == 1 {
			return vd[6] == 1
		}
		if vd[0] == 255 {
			return false
		}
	}
	return false
}

func matchSwap(r io.ReaderAt, size int64) bool {
	for _, page := range []int64{4096, 8192, 16384, 65536} {
		b := read(r, size, page-10, 10)
		if b != nil && (string(b) == "SWAPSPACE2" || string(b) == "SWAP-SPACE") {
			return true
		}
	}
	return false
}

func matchLUKS(r io.ReaderAt, size int64) bool {
	b := read(r, size, 0, 8)
	if b == nil || !bytes.Equal(b[:6], []byte("LUKS\xba\xbe")) {
		return false
	}
	v := binary.BigEndian.Uint16(b[6:])
	return v == 1 || v == 2
}

func matchGPT(r io.ReaderAt, size int64) bool {
	for _, lba := range []int64{512, 4096} {
		if b := read(r, size, lba, 8); b != nil && string(b) == "EFI PART" {
			return true
		}
	}
	return false
}

// matchMBR recognizes a DOS partition table: the boot signature, sane
// partition entries with at least one in use, and no filesystem boot
// sector (FAT, NTFS, exFAT also end in 55 AA) nor GPT's protective MBR.
func matchMBR(r io.ReaderAt, size int64) bool {
	bs := read(r, size, 0, 512)
	if bs == nil || bs[510] != 0x55 || bs[511] != 0xAA {
		return false
	}
	if fatBPB(bs) || string(bs[3:11]) == "NTFS    " || string(bs[3:11]) == "EXFAT   " || matchGPT(r, size) {
		return false
	}
	used := 0
	for i := 0; i < 4; i++ {
		e := bs[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return false
		}
		if e[4] != 0 {
			used++
		}
	}
	return used > 0
}

// driverOf maps a probed type to its kernel driver, for callers that hold a
// type name.
func driverOf(typ string) string {
	i := slices.IndexFunc(signatures, func(s signature) bool { return s.name == typ })
	if i < 0 {
		return ""
	}
	return signatures[i].driver
}
