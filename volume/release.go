package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// heldError is a loop device that something other than berth keeps once
// berth has let go of it: a mount of its filesystem in another mount
// namespace, or a process that has it open. Nothing of berth's is left;
// the kernel frees the device with its last holder.
type heldError struct {
	dev, source            string
	backingDev, backingIno uint64
	holders                []string
	err                    error
}

func (e *heldError) Error() string {
	who := "no holder found (it may have just let go)"
	if len(e.holders) > 0 {
		who = strings.Join(e.holders, "; ")
	}
	return fmt.Sprintf("loop device %s still holds %s: %s: %v", e.dev, e.source, who, e.err)
}

// Unwrap gives the wait's own error and the class: the device is in use,
// a state of the host the caller may wait out.
func (e *heldError) Unwrap() []error { return []error{e.err, errdefs.ErrFailedPrecondition} }

// withoutHeld drops the *heldError parts of err, the result of undo.
func withoutHeld(err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	var keep []error
	for _, e := range errs {
		var held *heldError
		if !errors.As(e, &held) {
			keep = append(keep, e)
		}
	}
	return errors.Join(keep...)
}

// noWait is a context already done: undo under the manager's lock never
// waits for a device something else holds (that would hold every other
// volume operation of the directory up); awaitReleases waits after.
func noWait() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// awaitReleases waits, within ctx, for the loop devices undo found held,
// and returns undo's other errors with what is still held then.
func awaitReleases(ctx context.Context, undone error) error {
	var errs []error
	if j, ok := undone.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if undone != nil {
		errs = []error{undone}
	}
	var out []error
	for _, e := range errs {
		var held *heldError
		if errors.As(e, &held) {
			e = releaseLoop(ctx, held.dev, held.backingDev, held.backingIno, held.source)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
