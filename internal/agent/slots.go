package agent

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// DefaultMaxSessions is how many sessions an agent runs at once unless its
// configuration says otherwise (max_sessions).
const DefaultMaxSessions = 4

// slots bounds the sessions an agent runs at once. A session over the
// bound waits for a slot, as long as its caller waits.
type slots struct{ ch chan struct{} }

func newSlots(n int) *slots {
	if n < 1 {
		n = DefaultMaxSessions
	}
	return &slots{ch: make(chan struct{}, n)}
}

func (s *slots) take(ctx context.Context, log hclog.Logger, session string) (release func(), err error) {
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch }, nil
	default:
	}
	log.Info("all session slots are busy; waiting", "max_sessions", cap(s.ch))
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a session slot: %w", ctx.Err())
	}
}
