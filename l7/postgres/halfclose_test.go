package postgres_test

import (
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// TestHalfClose sends statements and half-closes the connection at once,
// as a piped client does: the data and the FIN reach the relay together,
// and the session must end. The relay ends a session at the client's end,
// answered or not. (A relay that skips the read it expects to return
// EAGAIN after a short read hangs here: the read that returns the data
// leaves the end unread, and no new edge comes. See docs/benchmarks.md.)
func TestHalfClose(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	for _, tc := range []struct {
		name string
		msgs []pgproto3.FrontendMessage
	}{
		{"query", []pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT 1"}}},
		{"pipeline", func() (m []pgproto3.FrontendMessage) {
			for range 50 {
				m = append(m, &pgproto3.Query{String: "SELECT 1"})
			}
			return m
		}()},
		{"extended", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT $1::int"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("7")}},
			&pgproto3.Execute{}, &pgproto3.Sync{}}},
		{"large result", []pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT repeat('x', 1000) FROM generate_series(1, 2000)"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 {
				c := established(t, p)
				var b []byte
				for _, m := range tc.msgs {
					b, _ = m.Encode(b)
				}
				if _, err := c.Write(b); err != nil {
					t.Fatal(err)
				}
				c.Conn.(*net.TCPConn).CloseWrite()
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Fatalf("read: %v", err)
				}
				if r := p.result(t); r.err != nil {
					t.Errorf("Serve: %v", r.err)
				}
			}
		})
	}
}
