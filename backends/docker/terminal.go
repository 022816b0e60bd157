package docker

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ResizeTerminal implements driver.Attacher. Docker sizes the terminal of
// a running container only: a created container's terminal gets its first
// size, Spec.Process.ConsoleSize, when it starts.
func (r *Runtime) ResizeTerminal(ctx context.Context, id string, size specs.Box) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	if c.Config == nil || !c.Config.Tty {
		return fmt.Errorf("resize: the init has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	if c.State != nil && c.State.Status == container.StateCreated {
		return fmt.Errorf("resize: Docker sizes the terminal of a running container only (a created one gets the spec's console size when it starts): %w", errdefs.ErrFailedPrecondition)
	}
	_, err = r.eng.ContainerResize(ctx, c.ID, client.ContainerResizeOptions{Height: size.Height, Width: size.Width})
	return classify(err)
}

// sizeTerminal gives a container that just started its terminal's first
// size. Daemons before API 1.42 (Docker 20.10) ignore the size given at
// create: the process then runs for a moment with a terminal of no size
// (see doc.go).
func (r *Runtime) sizeTerminal(ctx context.Context, dockerID string) error {
	size, known := r.startSize(dockerID)
	if !known {
		res, err := r.eng.ContainerInspect(ctx, dockerID, client.ContainerInspectOptions{})
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return classify(err)
		}
		size = consoleSize(&res.Container)
		r.learnStartSize(dockerID, size)
	}
	if size == nil {
		return nil
	}
	_, err := r.eng.ContainerResize(ctx, dockerID, client.ContainerResizeOptions{Height: size.Height, Width: size.Width})
	if err == nil {
		return nil
	}
	// A process that exited already has no terminal to size.
	if res, ierr := r.eng.ContainerInspect(ctx, dockerID, client.ContainerInspectOptions{}); ierr == nil && res.Container.State != nil && !res.Container.State.Running {
		return nil
	}
	return fmt.Errorf("terminal size: %w", classify(err))
}

// consoleSize is the first size of a container's terminal: its spec's
// console size, nil without a terminal or a size.
func consoleSize(c *container.InspectResponse) *specs.Box {
	if c.Config == nil || !c.Config.Tty {
		return nil
	}
	rec, err := readRecord(c.Config.Labels)
	if err != nil || rec.Spec == nil || rec.Spec.Process == nil || rec.Spec.Process.ConsoleSize == nil {
		return nil
	}
	b := *rec.Spec.Process.ConsoleSize
	return &b
}

// startSize returns the first terminal size of a Docker container this
// process knows of (nil: none to set), and whether it knows it.
func (r *Runtime) startSize(dockerID string) (*specs.Box, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.sizes[dockerID]
	return b, ok
}

func (r *Runtime) learnStartSize(dockerID string, b *specs.Box) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sizes[dockerID] = b
}
