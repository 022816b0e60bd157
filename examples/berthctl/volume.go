package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// volumeList is a repeatable --volume SRC:DST[:ro][:raw] flag.
type volumeList []volume.Spec

func (v *volumeList) String() string { return fmt.Sprint(len(*v)) }

func (v *volumeList) Set(s string) error {
	sp, err := volume.ParseSpec(s)
	if err != nil {
		return err
	}
	if sp.Source != "" {
		if sp.Source, err = filepath.Abs(sp.Source); err != nil {
			return err
		}
	}
	*v = append(*v, sp)
	return nil
}

// policyFlags are the global switches that relax the volume and security
// policies, each by name.
type policyFlags struct {
	allowFS      fsList
	fsck         bool
	rawNoUserns  bool
	volumeNoExec bool
	privileged   bool
}

type fsList []string

func (l *fsList) String() string { return strings.Join(*l, ",") }

func (l *fsList) Set(v string) error {
	*l = append(*l, strings.Split(v, ",")...)
	return nil
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.Var(&p.allowFS, "allow-fs", "also allow volumes of filesystem `TYPE` (repeatable; default whitelist: ext4, xfs, tmpfs)")
	fs.BoolVar(&p.fsck, "fsck", false, "check block and image volumes read-only (e2fsck -n, xfs_repair -n) before mounting")
	fs.BoolVar(&p.rawNoUserns, "allow-raw-block-without-userns", false, "allow raw block volumes in containers without a user namespace (root there can mount them)")
	fs.BoolVar(&p.volumeNoExec, "volume-noexec", false, "mount volumes noexec")
	fs.BoolVar(&p.privileged, "allow-privileged", false, "allow specs that loosen confinement: extra capabilities, hooks, host namespaces, devices, unconfined seccomp")
}

// security is the security policy the flags ask for.
func (p *policyFlags) security() runtime.SecurityPolicy {
	return runtime.SecurityPolicy{AllowPrivileged: p.privileged}
}

// policy is the volume policy the flags ask for.
func (p *policyFlags) policy() volume.Policy {
	pol := volume.DefaultPolicy().Allow(p.allowFS...)
	pol.Fsck = p.fsck
	pol.RawBlockWithoutUserNamespace = p.rawNoUserns
	pol.NoExec = p.volumeNoExec
	return pol
}

// cmdVolume: berthctl volume probe PATH.
func (a *app) cmdVolume(fs *flag.FlagSet, args []string) (int, error) {
	if len(args) == 0 || args[0] != "probe" {
		return 0, usageErrorf("volume: want `volume probe PATH`")
	}
	if err := a.parse(fs, args[1:]); err != nil {
		return 0, err
	}
	if err := exactArgs(fs, 1); err != nil {
		return 0, err
	}
	path := fs.Arg(0)
	pol := a.policy.policy()
	if err := pol.Validate(); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %w", path, err)
	}
	got, err := volume.Probe(f, size)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %w", path, err)
	}
	if err := pol.Check(got); err != nil {
		return 0, fmt.Errorf("volume %s: %w", path, err)
	}
	if pol.Fsck {
		if err := volume.Fsck(context.Background(), path, got); err != nil {
			return 0, fmt.Errorf("volume %s: %w", path, err)
		}
	}
	// The type, and the bytes its superblock claims of the device's.
	fmt.Fprintf(a.stdout, "%s (%d bytes of %d)\n", got.Type, got.Size, size)
	return 0, nil
}

// cmdAttach: berthctl attach ID SRC:DST[:ro][:raw].
func (a *app) cmdAttach(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseN(fs, args, 2); err != nil {
		return 0, err
	}
	var vols volumeList
	if err := vols.Set(fs.Arg(1)); err != nil {
		return 0, err
	}
	return a.onContainer(fs.Arg(0), func(ctx context.Context, c *runtime.Container) error {
		return c.AttachVolume(ctx, vols[0])
	})
}

// cmdDetach: berthctl detach ID DST.
func (a *app) cmdDetach(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseN(fs, args, 2); err != nil {
		return 0, err
	}
	return a.onContainer(fs.Arg(0), func(ctx context.Context, c *runtime.Container) error {
		return c.DetachVolume(ctx, fs.Arg(1))
	})
}
