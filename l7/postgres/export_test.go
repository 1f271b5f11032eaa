package postgres

// SetWatchStarting makes f run as each client watch starts, before it
// reads; it returns what undoes it.
func SetWatchStarting(f func()) (undo func()) {
	watchStarting = f
	return func() { watchStarting = nil }
}
