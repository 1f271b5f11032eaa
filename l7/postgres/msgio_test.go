package postgres

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// choppyReader hands out data a few bytes at a time and fails every
// third read with a deadline error, as a client read cut by the idle
// timeout does.
type choppyReader struct {
	data  []byte
	sizes []byte
	calls int
}

func (c *choppyReader) Read(p []byte) (int, error) {
	c.calls++
	if c.calls%3 == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, 1+int(c.sizes[c.calls%len(c.sizes)]))
	}
	n = min(n, len(p))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzMsgReader holds msgReader to pgproto3.Backend's framing: the same
// messages, then the same kind of error (unknown type, bad length, over
// the limit, end of input), whatever the reads' sizes and however often a
// read fails with a deadline error and is retried.
func FuzzMsgReader(f *testing.F) {
	q, _ := (&pgproto3.Query{String: "select 1"}).Encode(nil)
	p, _ := (&pgproto3.Parse{Name: "a", Query: "select $1", ParameterOIDs: []uint32{23}}).Encode(nil)
	s, _ := (&pgproto3.Sync{}).Encode(nil)
	f.Add(append(append(q, p...), s...), []byte{0, 3, 200})
	f.Add(append(q, 'z', 0, 0, 0, 4), []byte{1})
	f.Add([]byte{'Q', 0, 0, 0, 2}, []byte{})
	f.Add([]byte{'Q', 0, 1, 0, 0, 'x'}, []byte{7})
	f.Add(append(q, q[:7]...), []byte{2, 5})
	const max = 1 << 10
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		be := pgproto3.NewBackend(bytes.NewReader(data), io.Discard)
		be.SetMaxBodyLen(max)
		var want [][]byte
		var wantErr error
		for {
			msg, err := be.Receive()
			if err != nil {
				wantErr = err
				break
			}
			b, err := msg.Encode(nil)
			if err != nil {
				t.Skip() // a message pgproto3 decodes but cannot encode
			}
			want = append(want, b[:1])
		}
		mr := newMsgReader(&choppyReader{data: data, sizes: sizes}, max)
		mr.known = isFrontendType
		var got [][]byte
		var gotErr error
		framed := 0
		for {
			typ, frame, body, err := mr.next()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				gotErr = err
				break
			}
			if len(frame) != 5+len(body) || frame[0] != typ {
				t.Fatalf("frame %q, body %q", frame, body)
			}
			framed += len(frame)
			// pgproto3 decodes the body too: count only what it took.
			if len(got) < len(want) {
				got = append(got, []byte{typ})
			}
		}
		if len(got) < len(want) {
			t.Fatalf("msgReader framed %d messages; pgproto3 %d", len(got), len(want))
		}
		// pgproto3 stops at a body it cannot decode; msgReader frames it
		// (the relay decodes it, with the same error). Compare the framing
		// errors where pgproto3 stopped at the framing.
		var big1, big2 *pgproto3.ExceededMaxBodyLenErr
		switch {
		case errors.As(wantErr, &big1):
			if !errors.As(gotErr, &big2) || *big1 != *big2 {
				t.Fatalf("pgproto3: %v; msgReader: %v", wantErr, gotErr)
			}
		case errors.Is(wantErr, io.ErrUnexpectedEOF) && len(got) == len(want):
			if !errors.Is(gotErr, io.ErrUnexpectedEOF) {
				t.Fatalf("pgproto3: %v; msgReader: %v", wantErr, gotErr)
			}
		}
		if framed > len(data) {
			t.Fatalf("framed %d bytes of %d", framed, len(data))
		}
	})
}
