package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

// Attach implements driver.Attacher with the daemon's attach, from any
// process. The daemon feeds the init's stdin from every attachment that
// gives one; with StdinOnce it closes it at the end of the first one's
// input, but for a terminal (see doc.go).
func (r *Runtime) Attach(ctx context.Context, id string, pio driver.IO) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	rec, err := readRecord(c.Config.Labels)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	if pio.Stdin != nil && !rec.OpenStdin {
		// The daemon would take the attachment and drop its input.
		return fmt.Errorf("attach: the init's standard input was not kept open for attachments: %w", errdefs.ErrFailedPrecondition)
	}
	if c.State != nil && (c.State.Paused || c.State.Restarting) {
		// The daemon refuses it, in a failed upgrade that has no class.
		return fmt.Errorf("attach: Docker does not attach to a paused or restarting container: %w", errdefs.ErrFailedPrecondition)
	}
	if c.State != nil && statusOf(c.State.Status) == driver.StatusStopped {
		// The daemon would keep the attachment until a restart.
		return fmt.Errorf("attach: the container exited: %w", errdefs.ErrFailedPrecondition)
	}
	tty := c.Config.Tty
	// Both streams always: the end of the output is how the attachment
	// learns that the init exited.
	res, err := r.eng.ContainerAttach(ctx, c.ID, client.ContainerAttachOptions{Stream: true, Stdin: pio.Stdin != nil, Stdout: true, Stderr: true})
	if err != nil {
		return classify(err)
	}
	a := copyStreams(res.HijackedResponse, pio, attachOptions{tty: tty, closeStdin: c.Config.StdinOnce && !tty})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.endAfterExit(wctx, id, a)
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		a.stop()
		<-a.done
		return ctx.Err()
	}
}

// endAfterExit ends an attachment exitGrace after the container exits.
// The daemon ends the stream of an attachment it registered before the
// exit itself, once the output is written to it; one it registered after
// (the exit came between the caller's look at the state and the attach)
// it keeps until the container starts again. A container deleted meanwhile
// has exited too.
func (r *Runtime) endAfterExit(ctx context.Context, id string, a *attachment) {
	if _, err := r.waitOnce(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-t.C:
		a.end()
	case <-a.done:
	case <-ctx.Done():
	}
}
