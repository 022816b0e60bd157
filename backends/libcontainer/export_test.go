package libcontainer

// WithSupervisorShare caps how many containers each supervisor this
// runtime starts takes, so that tests reach the next supervisor with a few.
func WithSupervisorShare(n int) Option {
	return func(r *Runtime) error {
		r.supervisorShare = n
		return nil
	}
}
