package postgres_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// slowWriteConn returns from each Write a while after its bytes have left:
// what a loaded machine's scheduler does to a goroutine now and then, on
// demand.
type slowWriteConn struct {
	net.Conn
	delay time.Duration
}

func (c *slowWriteConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	time.Sleep(c.delay) // the scheduler's delay, simulated
	return n, err
}

func slowWriteDial(delay time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &slowWriteConn{Conn: c, delay: delay}, nil
	}
}

// TestSlowUpstreamWrites is the regression test of a hang seen under heavy
// load (pgbench through the proxy at a load average of 13): a pgconn write
// during the upstream login that returned after more than 15ms started
// pgconn's background reader, which was still blocked in a Read of the
// upstream connection when the engine hijacked it, and took the server's
// answer to the client's first statement. The client then waited forever.
func TestSlowUpstreamWrites(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	for _, tc := range []struct {
		name string
		tgt  *config.Target
		dsn  func(p *proxy) string
	}{
		{"injected", target(srv), (*proxy).dsn},
		{"passthrough", passthroughTarget(srv), func(p *proxy) string { return p.dsnWith(srv.App.Password) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxyDial(t, context.Background(), srv, tc.tgt, slowWriteDial(40*time.Millisecond))
			for i := range 3 {
				ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
				c, err := pgx.Connect(ctx, tc.dsn(p))
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				var got int
				err = c.QueryRow(ctx, "SELECT $1::int", i).Scan(&got)
				c.Close(context.Background())
				cancel()
				if err != nil || got != i {
					t.Fatalf("session %d, first statement: %d, %v", i, got, err)
				}
				p.result(t)
			}
		})
	}
}
