package libcontainer

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
)

// A container with a CRI log (driver.CreateRequest.CRILog) has it written
// by whatever copies its output: its monitor, or the calling process for
// an Attached runtime. That process answers reopen requests on the
// container's control socket (control.go) while it copies the output: it
// reopens the CRI log's path and answers once the new file is open.

// ReopenCRILog implements driver.CRILogReopener: it asks the process that
// copies the container's output to reopen its CRI log, and returns once it
// has.
func (r *Runtime) ReopenCRILog(ctx context.Context, id string) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	if rec.CRILog == "" {
		return fmt.Errorf("created without a CRI log: %w", errdefs.ErrFailedPrecondition)
	}
	if err := r.request(ctx, id, controlRequest{Op: opReopen}); err != nil {
		return fmt.Errorf("CRI log %s: %w", rec.CRILog, err)
	}
	return nil
}
