package image

import (
	"github.com/berthrun/berth/image/layer"
)

// Limits bound what one import may read and store. A zero field takes its
// default (DefaultLimits); a negative one means no limit. Exceeding a limit
// stops the import as soon as it is seen, with a resource-exhausted error,
// and leaves the store as it was.
type Limits struct {
	// MaxArchiveBytes bounds the bytes read from the archive (for a
	// compressed archive, the bytes once decompressed too): the compressed
	// size of everything the store may receive.
	MaxArchiveBytes int64
	// MaxUncompressedBytes bounds the sum of the archive's layers once
	// decompressed.
	MaxUncompressedBytes int64
	// MaxRatio bounds a layer's (or a compressed archive's)
	// decompressed size over its compressed size, once past 1 MiB.
	MaxRatio int64
	// MaxLayerEntries bounds the entries of one layer.
	MaxLayerEntries int
	// MaxPathLength bounds the bytes of a layer entry's name.
	MaxPathLength int
	// MaxPathDepth bounds the elements of a layer entry's name.
	MaxPathDepth int
	// MaxLayers bounds the layers of one image.
	MaxLayers int
	// MaxJSONBytes bounds each JSON document (manifest.json, index.json,
	// manifests, configs).
	MaxJSONBytes int64
	// MaxArchiveEntries bounds the entries of the archive itself.
	MaxArchiveEntries int
}

// DefaultLimits are generous for real images and small next to a host's
// disk: 16 GiB read, 64 GiB unpacked, a ratio of 100, a million entries a
// layer, PATH_MAX names 128 deep, 128 layers (overlayfs stacks no more),
// 8 MiB JSON documents and 100000 archive entries.
var DefaultLimits = Limits{
	MaxArchiveBytes:      16 << 30,
	MaxUncompressedBytes: 64 << 30,
	MaxRatio:             100,
	MaxLayerEntries:      1 << 20,
	MaxPathLength:        4096,
	MaxPathDepth:         128,
	MaxLayers:            128,
	MaxJSONBytes:         8 << 20,
	MaxArchiveEntries:    100000,
}

// resolved fills the zero fields with defaults and makes negative ones
// unlimited.
func (l Limits) resolved() Limits {
	d := DefaultLimits
	i64 := func(v, def int64) int64 {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 1<<63 - 1
		}
		return v
	}
	i := func(v, def int) int {
		switch {
		case v == 0:
			return def
		case v < 0:
			return int(^uint(0) >> 1)
		}
		return v
	}
	return Limits{
		MaxArchiveBytes:      i64(l.MaxArchiveBytes, d.MaxArchiveBytes),
		MaxUncompressedBytes: i64(l.MaxUncompressedBytes, d.MaxUncompressedBytes),
		MaxRatio:             i64(l.MaxRatio, d.MaxRatio),
		MaxLayerEntries:      i(l.MaxLayerEntries, d.MaxLayerEntries),
		MaxPathLength:        i(l.MaxPathLength, d.MaxPathLength),
		MaxPathDepth:         i(l.MaxPathDepth, d.MaxPathDepth),
		MaxLayers:            i(l.MaxLayers, d.MaxLayers),
		MaxJSONBytes:         i64(l.MaxJSONBytes, d.MaxJSONBytes),
		MaxArchiveEntries:    i(l.MaxArchiveEntries, d.MaxArchiveEntries),
	}
}

// layerLimits are the per-layer bounds, given what is left of the total.
func (l Limits) layerLimits(uncompressedLeft int64) layer.Limits {
	return layer.Limits{
		MaxEntries:    l.MaxLayerEntries,
		MaxPathLength: l.MaxPathLength,
		MaxPathDepth:  l.MaxPathDepth,
		MaxSize:       uncompressedLeft,
		MaxRatio:      l.MaxRatio,
	}
}
