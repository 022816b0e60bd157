// Package internal holds helpers no caller of berth should import: file
// helpers (fsutil), ID-mapped mounts (idmap) and test fixtures (fixture).
package internal
