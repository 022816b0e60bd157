package runtime

import "github.com/berthrun/berth/runtime/driver"

// These types are shared with the driver contract so that a value reported
// by a backend reaches the caller unchanged.
type (
	// Status is a container's lifecycle state.
	Status = driver.Status
	// ExitStatus is how a container or process ended.
	ExitStatus = driver.ExitStatus
	// Resources are limits that can change while a container runs.
	Resources = driver.Resources
	// Stats is a reading of a container's usage.
	Stats = driver.Stats
	// CPUStats split a container's CPU time and count its throttling.
	CPUStats = driver.CPUStats
	// MemoryStats detail a container's memory.
	MemoryStats = driver.MemoryStats
	// BlockIOStats are a container's I/O on one block device.
	BlockIOStats = driver.BlockIOStats
	// NetworkStats are an interface's counters.
	NetworkStats = driver.NetworkStats
	// ProcessStats count what a container's processes hold.
	ProcessStats = driver.ProcessStats
	// FilesystemStats are a container's writable layer and its
	// filesystem.
	FilesystemStats = driver.FilesystemStats
	// ProcessSpec describes an extra process for Exec.
	ProcessSpec = driver.ProcessSpec
	// Capabilities lists what the backend can do.
	Capabilities = driver.Capabilities
	// IO connects standard streams.
	IO = driver.IO
	// Info describes a container.
	Info = driver.Info
	// LogLimits cap a container's kept output.
	LogLimits = driver.LogLimits
	// Event is a change in one container's life (Runtime.Events).
	Event = driver.Event
	// EventType is what happened to a container.
	EventType = driver.EventType
)

// The lifecycle states.
const (
	StatusCreated = driver.StatusCreated
	StatusRunning = driver.StatusRunning
	StatusPaused  = driver.StatusPaused
	StatusStopped = driver.StatusStopped
	StatusUnknown = driver.StatusUnknown
)

// The events of a container's life (Runtime.Events).
const (
	EventCreated = driver.EventCreated
	EventStarted = driver.EventStarted
	EventPaused  = driver.EventPaused
	EventResumed = driver.EventResumed
	EventStopped = driver.EventStopped
	EventDeleted = driver.EventDeleted
)
