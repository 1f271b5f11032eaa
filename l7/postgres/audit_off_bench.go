//go:build benchnoaudit

package postgres

// journalStatements is false in this build: statements are judged but not
// journaled. Only test/bench builds it, to measure the journal's cost
// (docs/benchmarks.md); never ship it.
const journalStatements = false
