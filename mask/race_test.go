//go:build race

package mask

// raceEnabled: sync.Pool drops items on purpose under the race detector, so
// allocation counts mean nothing.
const raceEnabled = true
