package runtime

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/runtime/driver"
)

// ops are the backend's optional interfaces the runtime uses: each is nil
// when the backend lacks it or does not claim its capability, and the
// portable layer then answers not-implemented itself.
type ops struct {
	exec     driver.Execer
	pause    driver.Pauser
	update   driver.Updater
	stats    driver.StatsReader
	logs     driver.Logger
	attach   driver.VolumeAttacher
	resize   driver.DiskResizer
	snapshot driver.Snapshotter
	disks    driver.DiskMaker
	events   driver.EventSource
	crilog   driver.CRILogReopener
	ns       driver.NamespaceOpener
	streams  driver.Attacher
}

// optional is one capability and the interface that serves it.
type optional struct {
	capability string
	claimed    func(driver.Capabilities) bool
	// bind records the interface in o when d has it, and reports whether
	// it did.
	bind func(d driver.Runtime, o *ops) bool
}

// bindAs is optional.bind for an interface I stored by set.
func bindAs[I any](set func(*ops, I)) func(driver.Runtime, *ops) bool {
	return func(d driver.Runtime, o *ops) bool {
		i, ok := d.(I)
		if ok {
			set(o, i)
		}
		return ok
	}
}

// optionals lists every optional interface of the driver contract.
// Snapshot is served by a Snapshotter, or by the runtime itself over root
// disks (DiskMaker.SnapshotDisk), which is why it is checked after them.
var optionals = []optional{
	{"Exec", func(c driver.Capabilities) bool { return c.Exec }, bindAs(func(o *ops, i driver.Execer) { o.exec = i })},
	{"Pause", func(c driver.Capabilities) bool { return c.Pause }, bindAs(func(o *ops, i driver.Pauser) { o.pause = i })},
	{"Update", func(c driver.Capabilities) bool { return c.Update }, bindAs(func(o *ops, i driver.Updater) { o.update = i })},
	{"Stats", func(c driver.Capabilities) bool { return c.Stats }, bindAs(func(o *ops, i driver.StatsReader) { o.stats = i })},
	{"Logs", func(c driver.Capabilities) bool { return c.Logs }, bindAs(func(o *ops, i driver.Logger) { o.logs = i })},
	{"HotAttach", func(c driver.Capabilities) bool { return c.HotAttach }, bindAs(func(o *ops, i driver.VolumeAttacher) { o.attach = i })},
	{"DiskResize", func(c driver.Capabilities) bool { return c.DiskResize }, bindAs(func(o *ops, i driver.DiskResizer) { o.resize = i })},
	{"RootDisk", func(c driver.Capabilities) bool { return c.RootDisk }, bindAs(func(o *ops, i driver.DiskMaker) { o.disks = i })},
	{"Events", func(c driver.Capabilities) bool { return c.Events }, bindAs(func(o *ops, i driver.EventSource) { o.events = i })},
	{"CRILog", func(c driver.Capabilities) bool { return c.CRILog }, bindAs(func(o *ops, i driver.CRILogReopener) { o.crilog = i })},
	{"NamespaceFiles", func(c driver.Capabilities) bool { return c.NamespaceFiles }, bindAs(func(o *ops, i driver.NamespaceOpener) { o.ns = i })},
	{"Attach", func(c driver.Capabilities) bool { return c.Attach }, bindAs(func(o *ops, i driver.Attacher) { o.streams = i })},
	{"Snapshot", func(c driver.Capabilities) bool { return c.Snapshot }, func(d driver.Runtime, o *ops) bool {
		if s, ok := d.(driver.Snapshotter); ok && o.disks == nil {
			o.snapshot = s
			return true
		}
		return o.disks != nil
	}},
}

// bindOps finds the optional interfaces of d that its capabilities claim.
// A capability claimed without its interface is the backend's bug, refused
// with invalid-argument; an interface whose capability is false is not
// used.
func bindOps(d driver.Runtime, caps driver.Capabilities) (ops, error) {
	var o ops
	for _, opt := range optionals {
		if !opt.claimed(caps) {
			continue
		}
		if !opt.bind(d, &o) {
			return ops{}, fmt.Errorf("backend %s claims capability %s but does not implement its driver interface: %w", d.Name(), opt.capability, errdefs.ErrInvalidArgument)
		}
	}
	return o, nil
}
