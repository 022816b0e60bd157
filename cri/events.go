package cri

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/runtime"
)

// eventBuffer is how far a GetContainerEvents client may fall behind
// before its stream ends (with ResourceExhausted): a client that does not
// read must not hold up the server.
const eventBuffer = 1024

// event is a container event before its statuses are read.
type event struct {
	id, sandbox string
	typ         cri.ContainerEventType
	at          time.Time
}

// eventHub fans the server's container events out to GetContainerEvents
// clients. The server reports what it does itself (create, start, stop,
// removal); what happens on its own, a container's exit, comes from the
// runtimes' event streams, watched while a client listens.
type eventHub struct {
	s *RuntimeService

	mu      sync.Mutex
	clients map[chan event]struct{}
	last    map[string]cri.ContainerEventType // per container or pod, until deleted
	cancel  context.CancelFunc                // of the runtime watches
	wg      sync.WaitGroup
}

func newEventHub(s *RuntimeService) *eventHub {
	return &eventHub{s: s, clients: map[chan event]struct{}{}, last: map[string]cri.ContainerEventType{}}
}

// publish reports an event of container (or pod) id to every client,
// unless it repeats the last one of id (an exit the server caused and the
// runtime's stream also reports).
func (h *eventHub) publish(id, sandbox string, typ cri.ContainerEventType) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if last, ok := h.last[id]; ok && last == typ {
		return
	}
	if typ == cri.ContainerEventType_CONTAINER_DELETED_EVENT {
		delete(h.last, id)
	} else {
		h.last[id] = typ
	}
	ev := event{id: id, sandbox: sandbox, typ: typ, at: time.Now()}
	for ch := range h.clients {
		select {
		case ch <- ev:
		default:
			delete(h.clients, ch)
			close(ch) // fell behind: its stream ends
		}
	}
}

// subscribe adds a client, starting the runtime watches for the first.
func (h *eventHub) subscribe() (chan event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		seen := map[*runtime.Runtime]bool{}
		for _, rt := range h.s.handlers {
			if seen[rt] {
				continue // one runtime under two handler names
			}
			seen[rt] = true
			sub, err := rt.Events(ctx, runtime.EventsOptions{})
			if errdefs.IsNotImplemented(err) {
				continue
			}
			if err != nil {
				cancel()
				return nil, err
			}
			h.wg.Add(1)
			go h.watch(sub)
		}
		h.cancel = cancel
	}
	ch := make(chan event, eventBuffer)
	h.clients[ch] = struct{}{}
	return ch, nil
}

// unsubscribe removes a client, stopping the runtime watches after the
// last.
func (h *eventHub) unsubscribe(ch chan event) {
	h.mu.Lock()
	if _, ok := h.clients[ch]; ok {
		delete(h.clients, ch)
		close(ch)
	}
	var cancel context.CancelFunc
	if len(h.clients) == 0 && h.cancel != nil {
		cancel, h.cancel = h.cancel, nil
	}
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// watch reports the exits of the server's containers from a runtime's
// stream.
func (h *eventHub) watch(sub *runtime.Subscription) {
	defer h.wg.Done()
	defer sub.Close()
	for ev := range sub.Events() {
		if ev.Type != runtime.EventStopped {
			continue
		}
		c, err := h.s.state.container(ev.ID)
		if err != nil || c.ID != ev.ID {
			continue // a pod's infra, or not the server's
		}
		// A start under way publishes its event before it lets go of
		// the container's event lock: a container that exits at once is
		// reported started, then stopped, never the other way round.
		c.emu.Lock()
		c.emu.Unlock() //nolint:staticcheck // an empty section: a barrier
		h.publish(c.ID, c.SandboxID, cri.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
}

// close ends every client's stream and the watches.
func (h *eventHub) close() {
	h.mu.Lock()
	for ch := range h.clients {
		delete(h.clients, ch)
		close(ch)
	}
	cancel := h.cancel
	h.cancel = nil
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	h.wg.Wait()
}

// GetContainerEvents streams the events of the server's pods and
// containers, each with the pod's status and its containers' statuses at
// the time it is sent.
func (s *RuntimeService) GetContainerEvents(req *cri.GetEventsRequest, stream cri.RuntimeService_GetContainerEventsServer) error {
	ch, err := s.events.subscribe()
	if err != nil {
		return grpcError(err)
	}
	defer s.events.unsubscribe(ch)
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return grpcError(fmt.Errorf("events: the client fell more than %d events behind: %w", eventBuffer, errdefs.ErrResourceExhausted))
			}
			resp := &cri.ContainerEventResponse{ContainerId: ev.id, ContainerEventType: ev.typ, CreatedAt: ev.at.UnixNano()}
			if sb, err := s.state.sandbox(ev.sandbox); err == nil && sb.ID == ev.sandbox {
				resp.PodSandboxStatus = s.sandboxStatus(ctx, sb)
				for _, c := range s.podContainers(sb.ID) {
					if st, err := s.containerStatus(ctx, c); err == nil {
						resp.ContainersStatuses = append(resp.ContainersStatuses, st)
					}
				}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}
