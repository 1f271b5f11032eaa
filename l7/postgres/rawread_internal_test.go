package postgres

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestRawReaderInq checks what the raw reader learns from TCP_INQ: bytes
// left after a short read, none once drained (the next read waits), and a
// FIN that arrived with the data counted as something left.
func TestRawReaderInq(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := newRawReader(c)
	if r == nil {
		t.Fatal("no raw reader for a TCP connection (TCP_INQ: Linux 4.18)")
	}
	send := func(b string, fin bool) {
		if _, err := w.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		if fin {
			w.(*net.TCPConn).CloseWrite()
		}
		time.Sleep(20 * time.Millisecond) // on loopback, arrived
	}

	// Each step runs in the pump; reads says what Read returned.
	type read struct {
		s   string
		err error
	}
	var reads []read
	buf := make([]byte, 4)
	step := func() error {
		n, err := r.Read(buf)
		reads = append(reads, read{string(buf[:n]), err})
		if err == errWouldBlock && len(reads) > 1 {
			return errors.New("stop")
		}
		return err
	}
	check := func(want ...read) {
		t.Helper()
		reads = nil
		if err := r.pump(step); err == nil {
			t.Fatal("pump: nil error")
		}
		if len(reads) != len(want) {
			t.Fatalf("reads %v; want %v", reads, want)
		}
		for i := range want {
			if reads[i] != want[i] {
				t.Fatalf("reads %v; want %v", reads, want)
			}
		}
	}

	// Six bytes: a full read, a short one that drains the socket, then no
	// read at all (errWouldBlock) — the pump's first Read of a call always
	// reads.
	send("abcdef", false)
	check(read{"abcd", nil}, read{"ef", nil}, read{"", errWouldBlock})

	// Data and FIN together: the short read leaves the FIN, so the next
	// read is made and returns the end.
	send("gh", true)
	check(read{"gh", nil}, read{"", io.EOF})
}
