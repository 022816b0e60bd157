// Command bootfloor does nothing, linking only what every command line
// that starts containers through libcontainer must: its nsenter (cgo, a C
// constructor run before the Go runtime). Its run time is the least such a
// command line boots in; scripts/benchinproc adds it to libcontainer's own
// time to give the floor of a command line like berthctl or runc.
package main

import _ "github.com/opencontainers/runc/libcontainer/nsenter"

func main() {}
