package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// A read whose commit is under way when the connection is lost (a server
// stopping or crashing between the commit and its reply) must not leave
// messages invisible that the reader does not know of: either the read
// returns them, or they stay visible. A deferred trigger holds the read's
// commit while the proxy cuts the connection; the server commits all the
// same.
func TestReadLostWithItsConnectionLeavesNoMessageUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct := testsupport.NewDB(t)
	setup := queue.NewClient(direct)
	require.NoError(t, setup.Create(ctx, "q"))
	id, err := setup.Send(ctx, "q", []byte(`{"n":1}`), 0)
	require.NoError(t, err)
	_, err = direct.Exec(ctx, `
		CREATE FUNCTION pgmq.test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER test_slow_commit AFTER UPDATE ON pgmq.q_q
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pgmq.test_slow_commit()`)
	require.NoError(t, err)

	proxy := testsupport.NewProxy(t, direct.Config().ConnString())
	pool, err := pgxpool.New(ctx, proxy.URL())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	c := queue.NewClient(pool)
	_, err = c.Direct(ctx)
	require.NoError(t, err)

	sleeping := func() (bool, error) {
		var n int
		err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'PgSleep'`).Scan(&n)
		return n > 0, err
	}
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if ok, err := sleeping(); err != nil || ok {
				break
			}
			time.Sleep(5 * time.Millisecond) // polls the server; the test waits on cut
		}
		proxy.Cut()
	}()
	msgs, readErr := c.Read(ctx, "q", time.Minute, 1)
	<-cut
	testsupport.WaitFor(t, 10*time.Second, "the held commit to finish", func() (bool, error) {
		ok, err := sleeping()
		return !ok, err
	})

	var invisible bool
	require.NoError(t, direct.QueryRow(ctx, `SELECT vt > clock_timestamp() + interval '30 seconds' FROM pgmq.q_q WHERE msg_id = $1`, id).
		Scan(&invisible))
	t.Logf("read: %d messages, error %v; message invisible afterwards: %v", len(msgs), readErr, invisible)
	if invisible {
		require.Len(t, msgs, 1, "the read committed: the reader must hold the message")
		require.Equal(t, id, msgs[0].ID)
	}
}
