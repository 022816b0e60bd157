package main

import (
	"fmt"
	"os"

	"github.com/berthrun/berth/backends/libcontainer"
)

func main() {
	libcontainer.Init() // a supervisor or an init: never returns
	fmt.Fprintln(os.Stderr, "berth-supervisor: started by berth's libcontainer backend only (see libcontainer.WithSupervisorBinary)")
	os.Exit(2)
}
