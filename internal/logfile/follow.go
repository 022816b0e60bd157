package logfile

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// Tail copies the last n lines of r to w (n < 0: all of r). A last line
// without its newline counts as a line.
func Tail(r io.Reader, n int, w io.Writer) error {
	if n < 0 {
		_, err := io.Copy(w, r)
		return err
	}
	if n == 0 {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	ring := make([][]byte, n)
	next, full := 0, false
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			ring[next] = line
			next = (next + 1) % n
			full = full || next == 0
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	start := 0
	if full {
		start = next
	}
	for i := 0; i < n; i++ {
		l := ring[(start+i)%n]
		if l == nil {
			continue
		}
		if _, err := w.Write(l); err != nil {
			return err
		}
	}
	return nil
}

// pollInterval is how often Follow looks for new output.
const pollInterval = 100 * time.Millisecond

// Follow writes the log at path to w, its last tail lines (tail < 0: all),
// then the output appended to it, across rotations, until done is closed
// (the writer is finished) and what was written is copied, or ctx ends.
func Follow(ctx context.Context, path string, tail int, w io.Writer, done <-chan struct{}) error {
	cur, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { cur.Close() }()
	if err := tailNow(path, cur, tail, w); err != nil {
		return err
	}
	finished := false
	for {
		if _, err := io.Copy(w, cur); err != nil {
			return err
		}
		if next, err := os.Open(path); err == nil {
			if !sameFile(cur, next) {
				// Rotated: the writer closed cur before renaming
				// it, whatever remains in it is there now.
				if _, err := io.Copy(w, cur); err != nil {
					next.Close()
					return err
				}
				cur.Close()
				cur = next
				continue
			}
			next.Close()
			if truncated(cur) {
				// One file only: the writer truncated it to start
				// over, so it is read again from its beginning.
				if _, err := cur.Seek(0, io.SeekStart); err != nil {
					return err
				}
				continue
			}
		}
		if finished {
			return nil
		}
		select {
		case <-done:
			// One more pass copies what came before the end.
			finished = true
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func sameFile(a, b *os.File) bool {
	fa, err1 := a.Stat()
	fb, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// truncated reports whether f is now shorter than where it is read.
func truncated(f *os.File) bool {
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Size() < off
}

// tailNow writes the last tail lines of what the log at path holds now:
// the rotated files, then the current one, cur, up to its end.
func tailNow(path string, cur *os.File, tail int, w io.Writer) error {
	names, err := Files(path)
	if err != nil {
		return err
	}
	var past []io.Reader
	for _, n := range names {
		if n == path {
			continue
		}
		f, err := os.Open(n)
		if err != nil {
			continue // rotated away meanwhile
		}
		defer f.Close()
		past = append(past, f)
	}
	return Tail(io.MultiReader(append(past, cur)...), tail, w)
}
