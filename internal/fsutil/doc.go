// Package fsutil holds small file helpers shared by berth's packages:
// crash-safe writes and JSON records.
package fsutil
