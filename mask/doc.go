// Package mask finds and masks sensitive values in PostgreSQL query results.
package mask
