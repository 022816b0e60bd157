// Package internal holds helpers no caller of berth should import: file
// helpers (fsutil), loop devices (loop), ID-mapped mounts (idmap), tar
// writing (tarutil), /etc/subuid parsing (subid) and test fixtures
// (fixture).
package internal
