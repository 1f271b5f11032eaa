package postgres

import (
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestLoopSpinAdapts(t *testing.T) {
	l := &eventLoop{spinMax: 40 * time.Microsecond}
	l.spin = l.spinMax
	// Long waits: spinning would have been in vain, down to none.
	for range 4 {
		l.adapt(time.Millisecond)
	}
	if l.spin != 0 {
		t.Fatalf("spin after long waits = %v; want 0", l.spin)
	}
	// A wait in between changes nothing.
	l.adapt(100 * time.Microsecond)
	if l.spin != 0 {
		t.Fatalf("spin after a middling wait = %v; want 0", l.spin)
	}
	// Short waits: it comes back, up to the bound.
	l.adapt(10 * time.Microsecond)
	if l.spin != 5*time.Microsecond {
		t.Fatalf("spin after a short wait = %v; want 5µs", l.spin)
	}
	for range 8 {
		l.adapt(10 * time.Microsecond)
	}
	if l.spin != l.spinMax {
		t.Fatalf("spin after short waits = %v; want %v", l.spin, l.spinMax)
	}
}

func TestLoopSpinFindsEventsAndTakesTurns(t *testing.T) {
	l, err := newEventLoop()
	if err != nil {
		t.Fatal(err)
	}
	l.spinMax, l.spin = 200*time.Millisecond, 200*time.Millisecond
	evs := make([]syscall.EpollEvent, 8)

	// While one loop spins, another parks at once.
	spinning.Store(true)
	if n := l.spinPoll(evs); n != 0 {
		t.Fatalf("spinPoll while another loop spins = %d events; want 0 at once", n)
	}
	spinning.Store(false)

	// An event that comes during the spin is found without parking.
	go func() {
		time.Sleep(5 * time.Millisecond)
		one := uint64(1)
		syscall.Write(l.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
	}()
	start := time.Now()
	n := l.spinPoll(evs)
	if n != 1 || evs[0].Fd != int32(l.wake) {
		t.Fatalf("spinPoll = %d events (%+v); want the eventfd's", n, evs[:n])
	}
	if d := time.Since(start); d >= l.spin {
		t.Errorf("spinPoll returned after %v, the whole spin", d)
	}
	if spinning.Load() {
		t.Error("the spinning turn was not given back")
	}
}
