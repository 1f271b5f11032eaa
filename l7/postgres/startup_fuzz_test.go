package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

// FuzzStartup feeds client bytes to the startup reader, seeded with the
// startup packets of real clients (testdata/startup: psql and pgbench with
// their SSLRequest, psql asking for replication, pgx with options) and
// hand-made cancel and GSSAPI requests.
func FuzzStartup(f *testing.F) {
	seeds, err := filepath.Glob("testdata/startup/*.bin")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	cancel := binary.BigEndian.AppendUint32(nil, 16)
	cancel = binary.BigEndian.AppendUint32(cancel, cancelRequestCode)
	cancel = binary.BigEndian.AppendUint32(cancel, 4242)
	f.Add(binary.BigEndian.AppendUint32(cancel, 0xdeadbeef))
	gss := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), gssEncRequestCode)
	f.Add(append(gss, gss...))
	f.Add([]byte{0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5}) // a TLS record: direct TLS

	e := &engine{target: &config.Target{Name: "fuzz"}, log: zap.NewNop(), decider: AllowAll, startupTimeout: time.Second}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The packet reader: what it accepts re-encodes to what it reads.
		r := bytes.NewReader(data)
		for range 8 {
			msg, err := readStartupPacket(r)
			if err != nil {
				var se *startupError
				if !errors.As(err, &se) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if m, ok := msg.(*pgproto3.StartupMessage); ok {
				if m.ProtocolVersion>>16 != 3 {
					t.Fatalf("accepted protocol %x", m.ProtocolVersion)
				}
				enc, err := m.Encode(nil)
				if err != nil {
					t.Fatal(err)
				}
				again, err := readStartupPacket(bytes.NewReader(enc))
				if err != nil {
					t.Fatalf("re-read of %q: %v", enc, err)
				}
				if !maps.Equal(again.(*pgproto3.StartupMessage).Parameters, m.Parameters) {
					t.Fatalf("parameters changed: %v, then %v", m.Parameters, again.(*pgproto3.StartupMessage).Parameters)
				}
			}
		}

		// The engine's startup phase on a connection carrying data.
		c := &fakeConn{r: bytes.NewReader(data)}
		st, err := e.readStartup(context.Background(), c)
		if err == nil {
			if st.params == nil {
				t.Fatal("startup without parameters")
			}
			if serr := e.checkStartup(st); serr == nil && (st.facts.User == "" || st.facts.Database == "") {
				t.Fatalf("accepted without user or database: %+v", st.facts)
			}
		}
	})
}

// fakeConn reads r and discards writes.
type fakeConn struct {
	r *bytes.Reader
	net.Conn
}

func (c *fakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
