package postgres

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestRawSocket(t *testing.T) {
	if _, ok := newRawSocket(tlsLikeConn{}); ok {
		t.Fatal("newRawSocket took a connection that is not plain TCP")
	}

	t.Run("large write waits for a slow reader", func(t *testing.T) {
		a, b := tcpPair(t)
		raw, ok := newRawSocket(a)
		if !ok {
			t.Fatal("no raw socket for a TCP connection")
		}
		payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: many times the socket buffers
		got := make(chan []byte, 1)
		go func() {
			var buf bytes.Buffer
			chunk := make([]byte, 4096)
			for buf.Len() < len(payload) {
				n, err := b.Read(chunk)
				buf.Write(chunk[:n])
				if err != nil {
					break
				}
				if buf.Len() < 1<<20 {
					time.Sleep(time.Millisecond) // slow at first: the writer meets EAGAIN
				}
			}
			got <- buf.Bytes()
		}()
		n, err := raw.Write(payload)
		if err != nil || n != len(payload) {
			t.Fatalf("Write: %d, %v; want %d", n, err, len(payload))
		}
		if r := <-got; !bytes.Equal(r, payload) {
			t.Fatalf("reader got %d bytes, not the payload", len(r))
		}
	})

	t.Run("read, deadline, end", func(t *testing.T) {
		a, b := tcpPair(t)
		raw, _ := newRawSocket(a)
		buf := make([]byte, 64)
		a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := raw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past its deadline: %v, want os.ErrDeadlineExceeded", err)
		}
		a.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(10 * time.Millisecond) // the read waits in the netpoller first
			b.Write([]byte("hello"))
			b.CloseWrite()
		}()
		n, err := raw.Read(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("Read: %q, %v", buf[:n], err)
		}
		if n, err := raw.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read at the peer's end: %d, %v; want 0, io.EOF", n, err)
		}
	})

	t.Run("write to a reset peer", func(t *testing.T) {
		a, b := tcpPair(t)
		raw, _ := newRawSocket(a)
		b.SetLinger(0)
		b.Close() // RST
		time.Sleep(10 * time.Millisecond)
		var err error
		for range 100 {
			if _, err = raw.Write([]byte("x")); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "write" || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			t.Fatalf("Write to a reset peer: %v, want a *net.OpError wrapping ECONNRESET or EPIPE", err)
		}
	})

	t.Run("bytes buffered at the startup come first", func(t *testing.T) {
		a, b := tcpPair(t)
		b.Write([]byte("startup|query1"))
		br := bufio.NewReaderSize(a, 1024)
		if s, err := br.ReadString('|'); err != nil || s != "startup|" {
			t.Fatalf("ReadString: %q, %v", s, err)
		}
		raw, _ := newRawSocket(a)
		r := &bufferedRaw{b: br, raw: raw}
		go func() {
			time.Sleep(10 * time.Millisecond)
			b.Write([]byte("|query2"))
			b.CloseWrite()
		}()
		all, err := io.ReadAll(r)
		if err != nil || string(all) != "query1|query2" {
			t.Fatalf("read %q, %v; want %q", all, err, "query1|query2")
		}
	})
}

// tlsLikeConn is a net.Conn that is not a *net.TCPConn (as a *tls.Conn).
type tlsLikeConn struct{ net.Conn }
