package runtime

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// claimingDriver claims capabilities it has no interface for.
type claimingDriver struct {
	*fakeDriver
	caps driver.Capabilities
}

func (c *claimingDriver) Capabilities() driver.Capabilities { return c.caps }

// A capability claimed without its interface is refused at New, naming the
// backend and the capability, before the state directory is touched.
func TestNewRefusesClaimWithoutInterface(t *testing.T) {
	for name, caps := range map[string]driver.Capabilities{
		"Exec":           {Exec: true},
		"Pause":          {Pause: true},
		"Update":         {Update: true},
		"Stats":          {Stats: true},
		"Logs":           {Logs: true},
		"HotAttach":      {HotAttach: true},
		"DiskResize":     {DiskResize: true},
		"Snapshot":       {Snapshot: true},
		"RootDisk":       {RootDisk: true},
		"Events":         {Events: true},
		"CRILog":         {CRILog: true},
		"NamespaceFiles": {NamespaceFiles: true},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			d := &claimingDriver{&fakeDriver{created: map[string]*driver.CreateRequest{}}, caps}
			_, err := New(d, WithStateDir(dir), withIDDir(t.TempDir()))
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
			require.Contains(t, err.Error(), "fake")
			require.Contains(t, err.Error(), name)
			_, err = os.Stat(dir)
			require.True(t, os.IsNotExist(err), "the state directory was not made")
		})
	}
}

// A backend with only the core interface runs, and the portable layer
// answers not-implemented for every optional operation itself.
func TestCoreOnlyBackend(t *testing.T) {
	rt, _, _ := newFakeRuntime(t)
	ctx := context.Background()
	c, err := rt.Create(ctx, "core", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true")})
	require.NoError(t, err)
	mem := int64(64 << 20)
	for name, op := range map[string]func() error{
		"exec": func() error {
			_, err := c.Exec(ctx, &ProcessSpec{Args: []string{"/bin/true"}}, IO{})
			return err
		},
		"pause":       func() error { return c.Pause(ctx) },
		"resume":      func() error { return c.Resume(ctx) },
		"update":      func() error { return c.Update(ctx, Resources{MemoryLimit: &mem}) },
		"stats":       func() error { _, err := c.Stats(ctx); return err },
		"logs":        func() error { _, err := c.Logs(ctx); return err },
		"attach":      func() error { return c.AttachVolume(ctx, volume.Spec{Destination: "/v", TmpfsSize: 1 << 20}) },
		"detach":      func() error { return c.DetachVolume(ctx, "/v") },
		"resize disk": func() error { return c.ResizeDisk(ctx, 1<<30) },
		"snapshot":    func() error { return c.Snapshot(ctx, io.Discard) },
		"reopen log":  func() error { return c.ReopenLog(ctx) },
		"CRI log": func() error {
			_, err := rt.Create(ctx, "core-cri", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), CRILog: filepath.Join(t.TempDir(), "0.log")})
			return err
		},
		"export": func() error { return c.Export(ctx, filepath.Join(t.TempDir(), "x")) },
		"import": func() error {
			_, err := rt.Import(ctx, "imported", t.TempDir(), ImportOptions{})
			return err
		},
	} {
		err := op()
		require.Truef(t, errdefs.IsNotImplemented(err), "%s: %v", name, err)
		require.Regexpf(t, `"(core|core-cri|imported)"`, err.Error(), "%s names the container", name)
	}
	var native *fakeDriver
	require.False(t, c.As(&native), "a backend without per-container types reaches none")
}
