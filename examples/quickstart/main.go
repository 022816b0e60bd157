// Command quickstart runs one container on berth's embedded engine from a
// busybox root filesystem and prints what it did at each step.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

func main() {
	libcontainer.Init()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "berth-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o711); err != nil {
		return err
	}
	rootfs := filepath.Join(work, "rootfs")
	if err := fixture.Busybox(rootfs); err != nil {
		return err
	}
	fmt.Println("built a busybox root filesystem in", rootfs)

	root := filepath.Join(work, "state")
	engine, err := libcontainer.Open(root)
	if err != nil {
		return err
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		return err
	}
	defer rt.Close()
	fmt.Printf("opened the embedded engine on %s (capabilities %+v)\n", root, rt.Capabilities())

	var out bytes.Buffer
	c, err := start(ctx, rt, rootfs, &out)
	if err != nil {
		return err
	}
	if err := changeLive(ctx, c); err != nil {
		return err
	}
	return stopAndDelete(ctx, c, root, &out)
}

// start creates and starts the container in a user namespace of its own,
// and runs a command in it.
func start(ctx context.Context, rt *runtime.Runtime, rootfs string, out *bytes.Buffer) (*runtime.Container, error) {
	spec := runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "echo hello from $(hostname); cat /proc/self/uid_map; exec sleep 30")
	c, err := rt.Create(ctx, "quickstart", &runtime.Config{Spec: spec, UserNamespace: true, IO: runtime.IO{Stdout: out, Stderr: out}})
	if err != nil {
		return nil, err
	}
	fmt.Println("created container", c.ID(), "in its own user namespace")
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	st, _ := c.State(ctx)
	fmt.Println("started it; state:", st)
	text, code, err := execIn(ctx, c, "id; ls /")
	if err != nil {
		return nil, err
	}
	fmt.Printf("exec'd `id; ls /` (exit %d):\n%s", code, indent(text))
	return c, nil
}

// changeLive changes the running container: its memory limit, a pause,
// and a volume attached.
func changeLive(ctx context.Context, c *runtime.Container) error {
	mem := int64(64 << 20)
	if err := c.Update(ctx, runtime.Resources{MemoryLimit: &mem}); err != nil {
		return err
	}
	stats, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("set its memory limit live to 64 MiB; stats: memory %d/%d bytes, %d pids\n", stats.MemoryUsage, stats.MemoryLimit, stats.Pids)

	if err := c.Pause(ctx); err != nil {
		return err
	}
	st, _ := c.State(ctx)
	fmt.Println("paused it; state:", st)
	if err := c.Resume(ctx); err != nil {
		return err
	}
	if err := c.AttachVolume(ctx, volume.Spec{Destination: "/scratch", TmpfsSize: 8 << 20}); err != nil {
		return err
	}
	text, _, err := execIn(ctx, c, "grep /scratch /proc/mounts")
	if err != nil {
		return err
	}
	fmt.Printf("resumed it and attached an 8 MiB tmpfs at /scratch while it runs:\n%s", indent(text))
	return nil
}

// stopAndDelete kills the container, deletes it and checks that nothing
// of it is left on the host.
func stopAndDelete(ctx context.Context, c *runtime.Container, root string, out *bytes.Buffer) error {
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	cgroups, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.Pid))
	if err != nil {
		return err
	}
	if err := c.Kill(ctx, syscall.SIGKILL); err != nil {
		return err
	}
	es, err := c.Wait(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("killed it: exit code %d (signal %d); its output:\n%s", es.Code, es.Signal, indent(out.String()))
	if err := c.Delete(ctx, runtime.DeleteOptions{}); err != nil {
		return err
	}
	if left := leftovers(string(cgroups), root); len(left) > 0 {
		return fmt.Errorf("deleted it, but these are left: %s", strings.Join(left, ", "))
	}
	fmt.Println("deleted it, and checked: no cgroup, mount or state left")
	return nil
}

// execIn runs a shell script in the container and returns its output and
// exit code.
func execIn(ctx context.Context, c *runtime.Container, script string) (string, int, error) {
	var out bytes.Buffer
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}}, runtime.IO{Stdout: &out, Stderr: &out})
	if err != nil {
		return "", 0, err
	}
	es, err := p.Wait(ctx)
	return out.String(), es.Code, err
}

// leftovers lists what of the container is still on the host: its cgroup
// directories (from /proc/PID/cgroup as it was), mounts under root, and
// its state directory.
func leftovers(cgroups, root string) []string {
	var left []string
	for _, line := range strings.Split(strings.TrimSpace(cgroups), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "quickstart") {
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			dir := filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(ctl, "name="), parts[2])
			if parts[1] == "" {
				dir = filepath.Join("/sys/fs/cgroup/unified", parts[2])
			}
			if _, err := os.Stat(dir); err == nil {
				left = append(left, dir)
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), root) {
		left = append(left, "a mount under "+root)
	}
	if _, err := os.Stat(filepath.Join(root, "containers", "quickstart")); err == nil {
		left = append(left, "its state directory")
	}
	return left
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
