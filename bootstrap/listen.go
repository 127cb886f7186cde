package bootstrap

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/store"
)

// listener wakes pollers when the store announces new messages on
// store.WakeChannel, so an idle node dispatches within milliseconds instead
// of a poll interval. Polling stays the fallback: notifications are lost
// while the connection is down, and clients other than Tasker do not send
// them.
type listener struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startListener(pool *pgxpool.Pool, sys *actors.System, log *slog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{cancel: cancel}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		retry := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := listen(ctx, pool, sys)
			if ctx.Err() != nil {
				return
			}
			log.Warn("queue notifications interrupted; polling continues", "error", err, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(retry*2, 10*time.Second)
		}
	}()
	return l
}

// listen holds one connection listening until ctx ends or the connection
// fails.
func listen(ctx context.Context, pool *pgxpool.Pool, sys *actors.System) error {
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection carries LISTEN state: it never goes back to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+store.WakeChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		sys.Wake(n.Payload)
	}
}

func (l *listener) stop() {
	l.cancel()
	l.wg.Wait()
}
