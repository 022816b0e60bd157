// Command bootfloor is the floor under the start-latency rows of
// scripts/bench-run.sh: it links libcontainer and nothing of berth.
//
//	bootfloor                     does nothing: its run time is the least a
//	                              command line on libcontainer boots in
//	bootfloor run BUNDLE STATE ID creates, runs, waits for and destroys the
//	                              OCI bundle's container with libcontainer
//	                              alone, as runc run does less its command
//	                              line, and prints the milliseconds taken
//
// The container's init is a re-exec of this program, so no package of
// berth's initializes in it either.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	if len(os.Args) == 1 {
		return
	}
	if len(os.Args) != 5 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: bootfloor [run BUNDLE STATE ID]")
		os.Exit(2)
	}
	ms, err := run(os.Args[2], os.Args[3], os.Args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bootfloor:", err)
		os.Exit(1)
	}
	fmt.Printf("%.3f\n", ms)
}

func run(bundle, state, id string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return 0, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return 0, err
	}
	// libcontainer's init warns that it cannot raise the bundle's ambient
	// capabilities (none is inheritable); the runc installed here does
	// not say so.
	logrus.SetLevel(logrus.ErrorLevel)
	t0 := time.Now()
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: &spec})
	if err != nil {
		return 0, err
	}
	c, err := libcontainer.Create(state, id, cfg)
	if err != nil {
		return 0, err
	}
	// As runc's command line makes it from the bundle.
	p := &libcontainer.Process{Args: spec.Process.Args, Env: spec.Process.Env, Cwd: spec.Process.Cwd, Init: true, NoNewPrivileges: &spec.Process.NoNewPrivileges}
	if c := spec.Process.Capabilities; c != nil {
		p.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	err = c.Run(p)
	if err == nil {
		if st, werr := p.Wait(); werr != nil || !st.Success() {
			err = fmt.Errorf("wait: %v %v", st, werr)
		}
	}
	if err := errors.Join(err, c.Destroy()); err != nil {
		return 0, err
	}
	return float64(time.Since(t0).Microseconds()) / 1000, nil
}
