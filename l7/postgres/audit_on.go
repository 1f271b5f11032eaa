//go:build !benchnoaudit

package postgres

// journalStatements is false only in a benchmark build (tag benchnoaudit)
// that measures what journaling statements costs: the daemon has no mode
// that lets a statement through unjournaled.
const journalStatements = true
