package mountns

import (
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// OnThrowawayThread runs fn on an OS thread of its own that is discarded
// afterwards, for work that changes the thread itself (its namespaces,
// filesystem IDs, capabilities) and must not leak into other goroutines.
// The main thread is never used: it can never end, so it would keep the
// change (and, say, a container's mount namespace) forever.
func OnThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	work := func() {
		// Never unlocked: the thread ends with this goroutine.
		goruntime.LockOSThread()
		errc <- fn()
	}
	go func() {
		goruntime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			work()
			return
		}
		// This goroutine holds the main thread while the work happens on
		// another one, then gives it back untouched.
		done := make(chan struct{})
		go func() { defer close(done); work() }()
		<-done
		goruntime.UnlockOSThread()
	}()
	return <-errc
}
