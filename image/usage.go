package image

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"

	"github.com/berthrun/berth/internal/errclass"
)

// Usage is what the store's directory takes on its filesystem: bytes (of
// the blocks allocated) and inodes, each file counted once however many
// links it has. Unpacked root filesystems are included.
func (s *Store) Usage(ctx context.Context) (bytes, inodes int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != s.dir && errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		inodes++
		bytes += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, 0, errclass.OS(err)
	}
	return bytes, inodes, nil
}
