package unpack

import "errors"

// ErrMergeConflict is what Merge returns when moving a layer's files into
// place could give another tree than applying the layer's stream would
// (see Merge): nothing was changed, and the caller applies the stream
// instead.
var ErrMergeConflict = errors.New("the layer cannot be laid over this tree by moving its files")

// Layer is one layer unpacked on its own (by a LayerUnpacker) into a
// directory, with what Merge needs to lay it over other layers.
type Layer struct {
	dir  string
	opts Options
	// dirs are the directories the layer names (the others it made for
	// the entries under them): what applying the layer's stream over
	// another layer's directory of the same name sets on it.
	dirs      map[string]dirRecord
	whiteouts []whiteoutRecord
	stats     Stats
	// upper is false when the layer's tree does not tell alone what the
	// layer does over others: its entries replaced or hid each other (a
	// name given twice, a whiteout of what it made). It can still be the
	// bottom layer.
	upper bool
	bytes int
	used  bool
}

// Bytes is about how much memory the layer's record takes.
func (l *Layer) Bytes() int { return l.bytes }

// whiteoutRecord is a whiteout of the layer that hides something of the
// layers below: NAME in dir, or everything in dir but kept (opaque).
type whiteoutRecord struct {
	dir, target string
	opaque      bool
	kept        []string
}

// maxRecordBytes bounds the names and attributes a LayerUnpacker records
// for Merge.
const maxRecordBytes = 32 << 20
