package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/term"
)

// callerTerminal is berthctl's own terminal while a process runs on a
// terminal of its own (-t): in raw mode when the caller types into the
// process (-i), so that every key, ^C included, reaches it as typed and
// its terminal does the echo and the signals; its size follows the
// caller's window (SIGWINCH).
type callerTerminal struct {
	// sizeFd is the terminal berthctl's window size is read from:
	// stdout's, else stdin's; -1 when neither is a terminal (the process
	// still gets one, of its own size).
	sizeFd int
	// rawFd is stdin's terminal, put in raw mode (restore gives it its
	// state back), or -1.
	rawFd   int
	restore *term.State
	winch   chan os.Signal
	done    chan struct{}
	wg      sync.WaitGroup
}

// openTerminal finds the caller's terminal and, with interactive, puts
// stdin's in raw mode until close.
func (a *app) openTerminal(interactive bool) (*callerTerminal, error) {
	t := &callerTerminal{sizeFd: -1, rawFd: -1}
	for _, f := range []*os.File{a.stdout, a.stdin} {
		if term.IsTerminal(int(f.Fd())) {
			t.sizeFd = int(f.Fd())
			break
		}
	}
	// Raw as `docker run -it` makes it: no echo, no line editing, no
	// signals from keys, and no output processing (the container's
	// terminal already turned its newlines into CR LF).
	if fd := int(a.stdin.Fd()); interactive && term.IsTerminal(fd) {
		st, err := term.MakeRaw(fd)
		if err != nil {
			return nil, fmt.Errorf("raw mode for the terminal on stdin: %w", err)
		}
		t.rawFd, t.restore = fd, st
	}
	return t, nil
}

// size is the caller's window size, or nil without a terminal.
func (t *callerTerminal) size() *specs.Box {
	if t.sizeFd < 0 {
		return nil
	}
	w, h, err := term.GetSize(t.sizeFd)
	if err != nil || w <= 0 || h <= 0 {
		return nil
	}
	return &specs.Box{Width: uint(w), Height: uint(h)}
}

// follow resizes the process's terminal, with resize, each time the
// caller's window changes, until close. A failed resize means the process
// has just ended, which its wait reports.
func (t *callerTerminal) follow(ctx context.Context, resize func(context.Context, specs.Box) error) {
	if t.sizeFd < 0 {
		return
	}
	t.winch = make(chan os.Signal, 1)
	t.done = make(chan struct{})
	signal.Notify(t.winch, syscall.SIGWINCH)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			select {
			case <-t.winch:
				if sz := t.size(); sz != nil {
					_ = resize(ctx, *sz)
				}
			case <-t.done:
				return
			}
		}
	}()
}

// close stops following the window and gives the caller's terminal back
// its mode.
func (t *callerTerminal) close() {
	if t.winch != nil {
		signal.Stop(t.winch)
		close(t.done)
		t.wg.Wait()
	}
	if t.restore != nil {
		_ = term.Restore(t.rawFd, t.restore)
	}
}
