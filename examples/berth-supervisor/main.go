package main

import (
	"fmt"
	"os"

	"github.com/berthrun/berth/backends/libcontainer"
)

func main() {
	libcontainer.Init() // as a supervisor or a container's init, it does not return
	fmt.Fprintln(os.Stderr, "berth-supervisor: started by berth's libcontainer backend only (see libcontainer.WithSupervisorBinary)")
	os.Exit(2)
}
