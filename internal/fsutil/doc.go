// Package fsutil holds small file helpers shared by berth's packages:
// crash-safe writes, JSON records and sparse copies.
package fsutil
