package bootstrap

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pingPool is the actors' probe of the database: a ping through the pool.
// After a server restart the pool still holds connections to the old
// server, each good for one failure; a ping that fails on such a
// connection (one the pool handed out) drops it and tries the next, so the
// probe reports the server rather than the pool's leftovers, and leaves
// the pool clean for the calls the breakers then let through. A pool that
// cannot connect at all fails at once.
func pingPool(pool *pgxpool.Pool) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var err error
		for range pool.Config().MaxConns + 1 {
			c, aerr := pool.Acquire(ctx)
			if aerr != nil {
				return aerr
			}
			err = c.Ping(ctx)
			// A connection the ping broke is closed, and the pool drops a
			// closed connection on release.
			c.Release()
			if err == nil || ctx.Err() != nil {
				return err
			}
		}
		return err
	}
}
