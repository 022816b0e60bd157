package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// callerTerminal is berthctl's own terminal while a process runs on a
// terminal of its own (-t): in raw mode when the caller types into the
// process (-i), so that every key, ^C included, reaches it as typed and
// its terminal does the echo and the signals; its size follows the
// caller's window (SIGWINCH).
type callerTerminal struct {
	// con is the terminal berthctl's window size is read from: stdout's,
	// else stdin's; nil when neither is a terminal (the process still
	// gets one, of its own size).
	con console.Console
	// raw is the terminal put in raw mode, to be reset; nil if none.
	raw   console.Console
	winch chan os.Signal
	done  chan struct{}
	wg    sync.WaitGroup
}

// openTerminal finds the caller's terminal and, with interactive, puts
// stdin's in raw mode until close.
func (a *app) openTerminal(interactive bool) (*callerTerminal, error) {
	t := &callerTerminal{}
	for _, f := range []*os.File{a.stdout, a.stdin} {
		if c, err := console.ConsoleFromFile(f); err == nil {
			t.con = c
			break
		}
	}
	if interactive {
		if c, err := console.ConsoleFromFile(a.stdin); err == nil {
			if err := c.SetRaw(); err != nil {
				return nil, fmt.Errorf("raw mode for the terminal on stdin: %w", err)
			}
			t.raw = c
		}
	}
	return t, nil
}

// size is the caller's window size, or nil without a terminal.
func (t *callerTerminal) size() *specs.Box {
	if t.con == nil {
		return nil
	}
	ws, err := t.con.Size()
	if err != nil || ws.Width == 0 || ws.Height == 0 {
		return nil
	}
	return &specs.Box{Width: uint(ws.Width), Height: uint(ws.Height)}
}

// follow resizes the process's terminal, with resize, each time the
// caller's window changes, until close. A failed resize means the process
// has just ended, which its wait reports.
func (t *callerTerminal) follow(ctx context.Context, resize func(context.Context, specs.Box) error) {
	if t.con == nil {
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
	if t.raw != nil {
		_ = t.raw.Reset()
	}
}
