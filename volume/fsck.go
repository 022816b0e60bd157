package volume

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containerd/errdefs"
)

// checkers runs each filesystem's own checker without repairing anything.
// ext: -f because a crafted image can claim to be clean.
var checkers = map[string][]string{
	"ext2": {"e2fsck", "-n", "-f"},
	"ext3": {"e2fsck", "-n", "-f"},
	"ext4": {"e2fsck", "-n", "-f"},
	"xfs":  {"xfs_repair", "-n"},
}

// Fsck runs the read-only checker for fs on device; a checker that reports
// any problem (or is missing) refuses the volume with invalid-argument.
func Fsck(ctx context.Context, device string, fs Filesystem) error {
	argv, ok := checkers[fs.Type]
	if !ok {
		return fmt.Errorf("no read-only checker known for %s: %w", fs.Type, errdefs.ErrNotImplemented)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], device)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		return fmt.Errorf("%s check failed (%v): %s: %w", fs.Type, err, msg, errdefs.ErrInvalidArgument)
	}
	return nil
}
