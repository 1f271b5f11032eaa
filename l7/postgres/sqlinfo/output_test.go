package sqlinfo

import (
	"errors"
	"slices"
	"testing"
)

func TestAnalyzeOutput(t *testing.T) {
	tests := []struct {
		sql      string
		columns  []string
		wholeRow bool
		query    string // "=" for the statement itself
		copy     *Copy
	}{
		{sql: "SELECT name, email FROM customers", query: "="},
		{sql: "SELECT id, c.email AS e, now() FROM public.customers c WHERE email LIKE '%x'", query: "="},
		{sql: "SELECT lower(c.email) AS e FROM public.customers c", columns: []string{"email"}, query: "="},
		{sql: "SELECT email || '' FROM customers", columns: []string{"email"}, query: "="},
		{sql: "SELECT * FROM customers", query: "="},
		{sql: "SELECT c.* FROM customers c", query: "="},
		{sql: "SELECT row_to_json(c) FROM customers c", columns: []string{"c"}, wholeRow: true, query: "="},
		{sql: "SELECT c FROM customers c", wholeRow: true, query: "="},
		{sql: "SELECT to_jsonb(customers) FROM customers", columns: []string{"customers"}, wholeRow: true, query: "="},
		{sql: "SELECT count(*) FROM customers", query: "="},
		{sql: "SELECT e FROM (SELECT email AS e FROM customers) s", columns: []string{"email"}, query: "="},
		{sql: "WITH x AS (SELECT email FROM customers) SELECT email FROM x", columns: []string{"email"}, query: "="},
		{sql: "SELECT email FROM customers UNION SELECT 'a'", columns: []string{"email"}, query: "="},
		{sql: "SELECT * FROM unnest(ARRAY(SELECT name FROM customers)) u", columns: []string{"name"}, query: "="},
		{sql: "SELECT (SELECT max(email) FROM customers) AS m", columns: []string{"email"}, query: "="},
		{sql: "UPDATE customers SET name = 'x' WHERE id = 1"},
		{sql: "UPDATE customers SET name = 'x' RETURNING email", query: "="},
		{sql: "DELETE FROM customers RETURNING upper(email)", columns: []string{"email"}, query: "="},
		{sql: "CREATE TABLE t AS SELECT email FROM customers", columns: []string{"email"}},
		{sql: "DECLARE c CURSOR FOR SELECT lower(email) FROM customers", columns: []string{"email"}, query: "SELECT lower(email) FROM customers"},
		{sql: "COPY customers TO STDOUT", query: "SELECT * FROM customers", copy: &Copy{Format: "text", ToStdout: true}},
		{sql: "COPY public.customers (name, email) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'n/a')",
			query: "SELECT name, email FROM public.customers",
			copy:  &Copy{Format: "csv", Header: true, Delimiter: ";", Null: "n/a", ToStdout: true}},
		{sql: "COPY (SELECT email FROM customers) TO STDOUT (FORMAT binary)", columns: []string{"email"},
			query: "SELECT email FROM customers", copy: &Copy{Format: "binary", ToStdout: true}},
		{sql: "COPY customers FROM STDIN"},
		{sql: "SET search_path = public"},
	}
	for _, tt := range tests {
		out, err := AnalyzeOutput(tt.sql)
		if err != nil {
			t.Fatalf("%s: %v", tt.sql, err)
		}
		if !slices.Equal(out.Columns, tt.columns) {
			t.Errorf("%s: columns %q, want %q", tt.sql, out.Columns, tt.columns)
		}
		if out.WholeRow != tt.wholeRow {
			t.Errorf("%s: whole row %v, want %v", tt.sql, out.WholeRow, tt.wholeRow)
		}
		want := tt.query
		if want == "=" {
			want = tt.sql
		}
		if out.Query != want {
			t.Errorf("%s: query %q, want %q", tt.sql, out.Query, want)
		}
		switch {
		case tt.copy == nil && out.Copy != nil:
			t.Errorf("%s: copy %+v, want none", tt.sql, *out.Copy)
		case tt.copy != nil && (out.Copy == nil || *out.Copy != *tt.copy):
			t.Errorf("%s: copy %+v, want %+v", tt.sql, out.Copy, *tt.copy)
		}
	}
}

func TestAnalyzeOutputErrors(t *testing.T) {
	for sql, want := range map[string]error{
		"SELEC 1":            ErrSyntax,
		"SELECT 1; SELECT 2": ErrMultiple,
		"  ; ":               ErrEmpty,
	} {
		if _, err := AnalyzeOutput(sql); !errors.Is(err, want) {
			t.Errorf("%q: %v, want %v", sql, err, want)
		}
	}
}
