package postgres_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestIdleTimeout(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	const idle = 400 * time.Millisecond
	p := startProxy(t, srv, nil, postgres.WithIdleTimeout(idle))
	ctx := t.Context()

	wantEnded := func(t *testing.T, c *pgconn.PgConn, code, msg string) {
		t.Helper()
		if r := p.result(t); !errors.Is(r.err, postgres.ErrIdleTimeout) {
			t.Errorf("Serve: %v; want ErrIdleTimeout", r.err)
		}
		// The FATAL waits in the socket: the next statement reads it.
		_, err := c.Exec(ctx, "SELECT 1").ReadAll()
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Severity != "FATAL" || pe.Code != code || pe.Message != msg {
			t.Errorf("after the idle timeout: %v; want FATAL %s %q", err, code, msg)
		}
	}

	t.Run("idle", func(t *testing.T) {
		c := p.connect(t).PgConn()
		start := time.Now()
		// A statement that runs longer than the timeout is not idleness;
		// neither is a client that keeps talking.
		if _, err := c.Exec(ctx, "SELECT pg_sleep(1)").ReadAll(); err != nil {
			t.Fatal(err)
		}
		for range 6 {
			time.Sleep(idle / 2) // pacing the client, not waiting for an event
			if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
				t.Fatalf("active client: %v", err)
			}
		}
		select {
		case r := <-p.results:
			t.Fatalf("session ended while active: %v", r.err)
		default:
		}
		wantEnded(t, c, "57P05", "terminating connection due to idle-session timeout")
		if el := time.Since(start); el < 2*idle {
			t.Errorf("ended after %v", el)
		}
	})

	t.Run("in transaction", func(t *testing.T) {
		c := p.connect(t).PgConn()
		if _, err := c.Exec(ctx, "BEGIN").ReadAll(); err != nil {
			t.Fatal(err)
		}
		wantEnded(t, c, "25P03", "terminating connection due to idle-in-transaction timeout")
	})

	t.Run("upstream backend ends", func(t *testing.T) {
		c := p.connect(t)
		var pid uint32
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		p.result(t)
		d := direct(t, srv)
		for start := time.Now(); ; {
			var n int
			if err := d.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Since(start) > waitLimit {
				t.Fatal("the upstream backend outlived the session")
			}
			time.Sleep(10 * time.Millisecond) // polling the server
		}
	})

	t.Run("a message cut by the deadline", func(t *testing.T) {
		// Half a message, then the rest after the deadline passed: the
		// client is talking, the message goes through whole.
		c := established(t, p)
		msg, _ := (&pgproto3.Query{String: "SELECT 'whole'"}).Encode(nil)
		c.Write(msg[:3])
		time.Sleep(idle * 3 / 4) // a slow client
		c.Write(msg[3:6])
		time.Sleep(idle * 3 / 4)
		c.Write(msg[6:])
		msgs, err := c.receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("got %s %s", e.Code, e.Message)
			}
		}
		p.result(t)
		c.SetReadDeadline(time.Now().Add(waitLimit))
		io.Copy(io.Discard, c)
	})
}
