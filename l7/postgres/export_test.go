package postgres

// SetWatchStarting makes f run as each client watch starts, before it
// reads; it returns what undoes it.
func SetWatchStarting(f func()) (undo func()) {
	watchStarting = f
	return func() { watchStarting = nil }
}

// LoopStats returns how many sessions the event loops took, and how many
// of them left for their goroutines.
func LoopStats() (served, left int64) {
	return loopStats.served.Load(), loopStats.left.Load()
}
