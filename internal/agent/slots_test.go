package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestSlotsBoundSessions(t *testing.T) {
	s := newSlots(2)
	log := hclog.NewNullLogger()
	r1, _ := s.take(context.Background(), log, "a")
	r2, _ := s.take(context.Background(), log, "b")
	got := make(chan func(), 1)
	go func() {
		r, err := s.take(context.Background(), log, "c")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("a third session ran while two held both slots")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	r3 := <-got // released: the waiting session runs
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.take(ctx, log, "d"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller that stopped waiting: %v", err)
	}
	r2()
	r3()
}
