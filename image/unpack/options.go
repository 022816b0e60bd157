package unpack

import (
	"github.com/berthrun/berth/image/layer"
)

// Options relax the unpacker's defaults.
type Options struct {
	// AllowDevices creates character and block device nodes; by default
	// they are dropped.
	AllowDevices bool
	// AllowSetid keeps setuid and setgid bits on files and their
	// security.capability attribute; by default both are cleared.
	AllowSetid bool
	// Limits are checked again on every entry (names, depth, entries per
	// layer); the zero value checks names only.
	Limits layer.Limits
}

// Stats counts what an unpacker did and dropped.
type Stats struct {
	Entries        int // entries applied, whiteouts included
	DevicesDropped int
	SetidCleared   int // files whose setuid/setgid bits or capabilities went
	XattrsDropped  int // trusted.* (and unsupported) extended attributes
}
