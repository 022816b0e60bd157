package runtimetest

import (
	"context"
	"io"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

func testErrors(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	for _, sub := range []struct {
		name string
		fn   func(context.Context, *testing.T, Harness, *runtime.Runtime)
	}{
		{"InvalidID", errorsInvalidID},
		{"InvalidSpec", errorsInvalidSpec},
		{"AlreadyExists", errorsAlreadyExists},
		{"NotFound", errorsNotFound},
		{"FailedPrecondition", errorsFailedPrecondition},
		{"InvalidRequest", errorsInvalidRequest},
	} {
		t.Run(sub.name, func(t *testing.T) { sub.fn(ctx, t, h, rt) })
	}
}

// errorsInvalidID checks that Create and Get refuse IDs that are not
// valid container IDs.
func errorsInvalidID(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	for _, id := range []string{"", "bad/id", "../escape", "-lead", strings.Repeat("a", 65), "sp ace"} {
		_, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
		require.Truef(t, isInvalidArgument(err), "Create(%q): %v", id, err)
		_, err = rt.Get(ctx, id)
		require.Truef(t, isInvalidArgument(err), "Get(%q): %v", id, err)
	}
}

// errorsInvalidSpec checks that Create refuses a spec without arguments
// (unless from an image), with a relative cwd, or none at all.
func errorsInvalidSpec(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	cfg := h.Config(t, "/bin/true")
	if cfg.Image == "" {
		// From an image, no arguments means the image's command.
		cfg.Spec.Process.Args = nil
		_, err := rt.Create(ctx, NewID("noargs"), cfg)
		require.Truef(t, isInvalidArgument(err), "no args: %v", err)
	}
	cfg = h.Config(t, "/bin/true")
	cfg.Spec.Process.Cwd = "relative"
	_, err := rt.Create(ctx, NewID("cwd"), cfg)
	require.Truef(t, isInvalidArgument(err), "relative cwd: %v", err)
	cfg = h.Config(t, "/bin/true")
	cfg.Spec = nil
	_, err = rt.Create(ctx, NewID("nospec"), cfg)
	require.Truef(t, isInvalidArgument(err), "no spec: %v", err)
}

// errorsAlreadyExists checks that a second Create of an ID is refused,
// naming the container.
func errorsAlreadyExists(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	id := NewID("twice")
	create(t, rt, id, h.Config(t, "/bin/true"))
	_, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
	require.Truef(t, isAlreadyExists(err), "second Create: %v", err)
	require.Contains(t, err.Error(), id, "the error names the container")
}

// errorsNotFound checks that operations on a missing or deleted container
// report not-found.
func errorsNotFound(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	id := NewID("missing")
	_, err := rt.Get(ctx, id)
	require.Truef(t, isNotFound(err), "Get: %v", err)
	require.Contains(t, err.Error(), id)
	c := create(t, rt, NewID("gone"), h.Config(t, "/bin/true"))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	for name, op := range map[string]func() error{
		"Start":  func() error { return c.Start(ctx) },
		"Kill":   func() error { return c.Kill(ctx, syscall.SIGKILL) },
		"Delete": func() error { return c.Delete(ctx, runtime.DeleteOptions{}) },
		"State":  func() error { _, err := c.State(ctx); return err },
	} {
		require.Truef(t, isNotFound(op()), "%s on a deleted container", name)
	}
}

// errorsFailedPrecondition checks that operations the container's state
// does not allow are refused, through its life.
func errorsFailedPrecondition(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	c := create(t, rt, NewID("pre"), h.Config(t, "/bin/sleep", "1000"))
	caps := rt.Capabilities()
	if caps.Pause {
		require.Truef(t, isFailedPrecondition(c.Resume(ctx)), "resume a created container")
	}
	if caps.Exec {
		_, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{})
		require.Truef(t, isFailedPrecondition(err), "exec in a created container: %v", err)
	}
	require.NoError(t, c.Start(ctx))
	err := c.Start(ctx)
	require.Truef(t, isFailedPrecondition(err), "start a running container: %v", err)
	require.Contains(t, err.Error(), c.ID())
	require.Truef(t, isFailedPrecondition(c.Delete(ctx, runtime.DeleteOptions{})), "delete a running container without force")
	if caps.Pause {
		require.Truef(t, isFailedPrecondition(c.Resume(ctx)), "resume a running container")
	}
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Truef(t, isFailedPrecondition(c.Kill(ctx, syscall.SIGKILL)), "kill a stopped container")
	require.Truef(t, isFailedPrecondition(c.Start(ctx)), "start a stopped container")
	if caps.Pause {
		require.Truef(t, isFailedPrecondition(c.Pause(ctx)), "pause a stopped container")
	}
	if caps.Update {
		mem := int64(64 << 20)
		require.Truef(t, isFailedPrecondition(c.Update(ctx, runtime.Resources{MemoryLimit: &mem})), "update a stopped container")
	}
}

// errorsInvalidRequest checks that bad signals, limits and exec specs are
// refused.
func errorsInvalidRequest(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime) {
	c := create(t, rt, NewID("badreq"), h.Config(t, "/bin/sleep", "1000"))
	require.Truef(t, isInvalidArgument(c.Kill(ctx, 0)), "signal 0")
	require.Truef(t, isInvalidArgument(c.Kill(ctx, 999)), "signal 999")
	if rt.Capabilities().Update {
		tiny := int64(1)
		require.Truef(t, isInvalidArgument(c.Update(ctx, runtime.Resources{MemoryLimit: &tiny})), "1-byte memory limit")
	}
	if rt.Capabilities().Exec {
		_, err := c.Exec(ctx, &runtime.ProcessSpec{}, runtime.IO{})
		require.Truef(t, isInvalidArgument(err), "exec without args: %v", err)
	}
}

// testNotImplemented runs on every backend: each optional operation whose
// capability is false answers not-implemented, and each whose capability
// is true is served (whatever else it answers, not not-implemented).
func testNotImplemented(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	c := create(t, rt, NewID("noimpl"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	mem := int64(64 << 20)
	checks := []struct {
		name string
		has  bool
		op   func() error
	}{
		{"exec", caps.Exec, func() error {
			p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{})
			if err == nil {
				_, err = p.Wait(ctx)
			}
			return err
		}},
		{"pause", caps.Pause, func() error {
			if err := c.Pause(ctx); err != nil {
				return err
			}
			return c.Resume(ctx)
		}},
		{"update", caps.Update, func() error { return c.Update(ctx, runtime.Resources{MemoryLimit: &mem}) }},
		{"stats", caps.Stats, func() error { _, err := c.Stats(ctx); return err }},
		{"logs", caps.Logs, func() error {
			rc, err := c.Logs(ctx)
			if err == nil {
				rc.Close()
			}
			return err
		}},
		{"hot attach", caps.HotAttach, func() error {
			if err := c.AttachVolume(ctx, volume.Spec{Destination: "/noimpl", TmpfsSize: 1 << 20}); err != nil {
				return err
			}
			return c.DetachVolume(ctx, "/noimpl")
		}},
		{"resize disk", caps.DiskResize, func() error { return c.ResizeDisk(ctx, 1<<20) }}, // a shrink where served
		{"snapshot", caps.Snapshot, func() error { return c.Snapshot(ctx, io.Discard) }},
		// A running container is refused either way; the class tells
		// whether the backend could move it at all.
		{"export", caps.RootDisk, func() error { return c.Export(ctx, t.TempDir()+"/x") }},
		// Created without a CRI log: failed-precondition where served.
		{"reopen log", caps.CRILog, func() error { return c.ReopenLog(ctx) }},
		// Served: the attachment ends with ctx, at once.
		{"attach", caps.Attach, func() error {
			actx, cancel := context.WithCancel(ctx)
			cancel()
			return c.Attach(actx, runtime.IO{Stdout: io.Discard})
		}},
		// Without a terminal: failed-precondition where served.
		{"resize", caps.Attach, func() error { return c.Resize(ctx, specs.Box{Height: 10, Width: 10}) }},
		{"open stdin", caps.Attach, func() error {
			return createAndDelete(ctx, rt, h.Config(t, "/bin/true"), func(cfg *runtime.Config) { cfg.OpenStdin = true })
		}},
		{"terminal", caps.Terminal, func() error {
			return createAndDelete(ctx, rt, h.Config(t, "/bin/true"), func(cfg *runtime.Config) { cfg.Spec.Process.Terminal = true })
		}},
		{"exec with a terminal", caps.Terminal, func() error {
			p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}, Terminal: true}, runtime.IO{})
			if err == nil {
				_, err = p.Wait(ctx)
			}
			return err
		}},
	}
	for _, ch := range checks {
		if ch.name == "exec with a terminal" && !caps.Exec {
			continue // no exec at all: the exec check says so
		}
		err := ch.op()
		if ch.has {
			require.Falsef(t, isNotImplemented(err), "%s is a capability of the backend: %v", ch.name, err)
		} else {
			require.Truef(t, isNotImplemented(err), "%s lacks a not-implemented error: %v", ch.name, err)
		}
	}
}

// createAndDelete creates a container of cfg as mutate changes it, and
// deletes it.
func createAndDelete(ctx context.Context, rt *runtime.Runtime, cfg *runtime.Config, mutate func(*runtime.Config)) error {
	mutate(cfg)
	c, err := rt.Create(ctx, NewID("noimpl"), cfg)
	if err != nil {
		return err
	}
	return c.Delete(ctx, runtime.DeleteOptions{Force: true})
}
