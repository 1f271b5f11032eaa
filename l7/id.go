package l7

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// IDPrefix starts every session id.
const IDPrefix = "s_"

// crockford is Crockford's base32 alphabet, as ULID uses it: sorting the
// encoded text sorts the encoded numbers.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idGen makes ULID-shaped ids: 48 bits of Unix milliseconds, then 80 bits
// of randomness. Within one millisecond (or when the clock steps back) the
// random part of the previous id is incremented instead, so the ids one
// generator makes are strictly increasing.
type idGen struct {
	mu     sync.Mutex
	ms     uint64 // milliseconds of the last id
	hi     uint16 // top 16 bits of the last id's 80-bit random part
	lo     uint64 // low 64 bits
	random func(b []byte)
}

var ids = idGen{random: func(b []byte) { rand.Read(b) }}

// NewID returns a new session id: "s_" and 26 Crockford base32 characters
// (a ULID). Ids sort by creation time, and the ids of one process are
// unique and strictly increasing.
func NewID() string { return ids.next(time.Now()) }

func (g *idGen) next(now time.Time) string {
	ms := uint64(now.UnixMilli()) & (1<<48 - 1)

	g.mu.Lock()
	if ms > g.ms {
		var b [10]byte
		g.random(b[:])
		g.ms = ms
		g.hi = binary.BigEndian.Uint16(b[:2])
		g.lo = binary.BigEndian.Uint64(b[2:])
	} else {
		g.lo++
		if g.lo == 0 {
			g.hi++
			if g.hi == 0 { // 80 bits overflowed: borrow the next millisecond
				g.ms++
			}
		}
	}
	ms, hi, lo := g.ms, g.hi, g.lo
	g.mu.Unlock()

	return encodeID(ms, hi, lo)
}

// encodeID writes the 128-bit value ms<<80 | hi<<64 | lo as 26 base32
// characters (130 bits, the top two always zero).
func encodeID(ms uint64, hi uint16, lo uint64) string {
	var out [len(IDPrefix) + 26]byte
	copy(out[:], IDPrefix)
	d := out[len(IDPrefix):]
	// 10 characters of time: 50 bits, of which ms fills the low 48.
	for i := range 10 {
		d[i] = crockford[(ms>>(45-5*i))&31]
	}
	// 16 characters of randomness: exactly 80 bits.
	r := uint64(hi)<<48 | lo>>16 // top 64 of the 80 bits
	for i := range 12 {          // 60 bits from r
		d[10+i] = crockford[(r>>(59-5*i))&31]
	}
	rest := (r&0xf)<<16 | lo&0xffff // the last 20 bits
	for i := range 4 {
		d[22+i] = crockford[(rest>>(15-5*i))&31]
	}
	return string(out[:])
}
