// Package subid reads /etc/subuid and /etc/subgid: the subordinate ID
// ranges granted to users, which other engines (Docker's userns-remap) map
// their containers onto.
package subid

import (
	"bufio"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Range is one "name:start:count" line.
type Range struct {
	Name         string
	Start, Count uint64
}

// End is one past the range's last ID.
func (r Range) End() uint64 { return r.Start + r.Count }

// Read returns the ranges of the file at path, by start; a missing file or
// a malformed line gives nothing for it.
func Read(path string) []Range {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Range
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		out = append(out, Range{parts[0], start, count})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}
