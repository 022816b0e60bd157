package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Update changes resource limits while the container lives.
func (c *Container) Update(ctx context.Context, res Resources) error {
	if err := c.capable("update", c.r.update != nil); err != nil {
		return err
	}
	if err := validateResources(c.id, &res); err != nil {
		return err
	}
	if _, err := c.require(ctx, "update", StatusCreated, StatusRunning, StatusPaused); err != nil {
		return err
	}
	return wrap(c.id, c.r.update.Update(ctx, c.id, &res))
}

// Stats reads the container's usage.
func (c *Container) Stats(ctx context.Context) (*Stats, error) {
	if err := c.capable("stats", c.r.stats != nil); err != nil {
		return nil, err
	}
	if _, err := c.require(ctx, "read stats of", StatusCreated, StatusRunning, StatusPaused); err != nil {
		return nil, err
	}
	s, err := c.r.stats.Stats(ctx, c.id)
	return s, wrap(c.id, err)
}

// validateResources refuses limits no engine could apply.
func validateResources(id string, r *Resources) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("container %q: %s: %w", id, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	if r.MemoryLimit != nil && *r.MemoryLimit != -1 && *r.MemoryLimit < 4<<20 {
		return bad("memory limit %d is below the 4 MiB minimum", *r.MemoryLimit)
	}
	if r.CPUShares != nil && (*r.CPUShares < 2 || *r.CPUShares > 262144) {
		return bad("CPU shares %d out of 2..262144", *r.CPUShares)
	}
	if r.CPUPeriod != nil && (*r.CPUPeriod < 1000 || *r.CPUPeriod > 1000000) {
		return bad("CPU period %d out of 1000..1000000 µs", *r.CPUPeriod)
	}
	if r.CPUQuota != nil && *r.CPUQuota != -1 && *r.CPUQuota < 1000 {
		return bad("CPU quota %d below 1000 µs", *r.CPUQuota)
	}
	if r.PidsLimit != nil && *r.PidsLimit != -1 && *r.PidsLimit < 1 {
		return bad("pids limit %d below 1", *r.PidsLimit)
	}
	return nil
}

// fromSpecResources reads the updatable part of OCI resources.
func fromSpecResources(r *specs.LinuxResources) *Resources {
	out := &Resources{}
	if r.Memory != nil {
		out.MemoryLimit = r.Memory.Limit
	}
	if r.CPU != nil {
		out.CPUShares = r.CPU.Shares
		out.CPUQuota = r.CPU.Quota
		out.CPUPeriod = r.CPU.Period
	}
	if r.Pids != nil {
		out.PidsLimit = r.Pids.Limit
	}
	return out
}
