package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// proxiedSignals are forwarded to the container while berthctl waits for
// it, as docker's sig-proxy does.
var proxiedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// signalProxy catches the proxied signals and, once forward is called,
// sends them on.
type signalProxy struct {
	ch   chan os.Signal
	done chan struct{}
	wg   sync.WaitGroup
}

func catchSignals() *signalProxy {
	p := &signalProxy{ch: make(chan os.Signal, 16), done: make(chan struct{})}
	signal.Notify(p.ch, proxiedSignals...)
	return p
}

// forward sends every caught signal, including those caught before, with
// send. A failure to deliver means the target has just exited, which the
// wait that follows reports; it is not berthctl's failure.
func (p *signalProxy) forward(send func(syscall.Signal) error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case s := <-p.ch:
				_ = send(s.(syscall.Signal))
			case <-p.done:
				return
			}
		}
	}()
}

// stop restores the signals' default handling.
func (p *signalProxy) stop() {
	signal.Stop(p.ch)
	close(p.done)
	p.wg.Wait()
}
