// Package internal holds helpers no caller of berth should import: file
// helpers, locks and unmounts (fsutil), error classes (errclass), loop
// devices (loop), ID-mapped mounts (idmap), kernel interface filesystems
// (kernfs), tar writing (tarutil), mounts moved into and out of a running
// container (mountns), capped and rotated logs (logfile), the Kubernetes
// CRI log format (crilog), killing what a container left (reap),
// /etc/subuid parsing (subid), the phase timings benchmarks report
// (phase) and test fixtures (fixture).
package internal
