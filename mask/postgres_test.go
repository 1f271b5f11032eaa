package mask

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

var capture = flag.Bool("capture", false, "rewrite testdata/copy_captures.json from TestPostgres")

// rowRecorder keeps each Write, which pgconn's CopyTo makes once per
// CopyData message, as one row.
type rowRecorder struct{ rows []string }

func (r *rowRecorder) Write(p []byte) (int, error) {
	r.rows = append(r.rows, string(p))
	return len(p), nil
}

const samplesSQL = `
CREATE TABLE samples (id int, t text, n numeric, j jsonb, b bytea, ts timestamptz);
INSERT INTO samples VALUES
 (1, 'alice@example.com', 12.50, '{"a": "x,y"}', '\x00ff', '2026-12-04 12:30:45+00'),
 (2, E'tab\there', NULL, NULL, NULL, NULL),
 (3, E'new\nline and\rcr', -1, '"str"', '\x', NULL),
 (4, E'back\\slash \\N', 0, '[1, "a\"b"]', '\x5c4e', NULL),
 (5, '', NULL, 'null', NULL, NULL),
 (6, '\N', 0.00001, NULL, NULL, NULL),
 (7, 'comma, "quoted" ''single'' semi;colon|pipe', NULL, NULL, NULL, NULL),
 (8, E'ctl\x01\x7f\b\f\x0b é 日本', NULL, NULL, NULL, NULL),
 (9, 'NULL', NULL, NULL, NULL, NULL),
 (10, '\.', NULL, NULL, NULL, NULL),
 (11, '4111 1111 1111 1111', 4111111111111111, '"4111111111111111"', NULL, NULL);
`

// TestPostgres checks the package against a real PostgreSQL: COPY rows as
// the server writes and reads them, masked values through the server's
// input and receive functions, and the text forms the hash method hashes.
//
// go test -run TestPostgres ./mask/ -args -capture rewrites the COPY captures
// that TestCopyCaptures and FuzzCopyRow use without a server.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	srv := pgtest.Start(t)
	conn := srv.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv.Exec(t, samplesSQL)

	t.Run("copy", func(t *testing.T) { testPostgresCopy(t, ctx, conn) })
	t.Run("masked values", func(t *testing.T) { testPostgresValues(t, ctx, conn) })
	t.Run("float text", func(t *testing.T) { testPostgresFloats(t, ctx, conn) })
	t.Run("numeric binary", func(t *testing.T) { testPostgresNumeric(t, ctx, conn) })
}

func testPostgresCopy(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	const cols = "id::text, t, n::text, j::text, b::text, ts::text"
	for _, c := range []struct {
		copy, options, query string
		format               CopyFormat
	}{
		{"samples", "", cols, CopyFormat{}},
		{"samples", "(FORMAT csv)", cols, CopyFormat{CSV: true}},
		{"samples", "(FORMAT csv, HEADER)", cols, CopyFormat{CSV: true, Header: true}},
		{"samples", `(FORMAT csv, DELIMITER ';', NULL 'NULL', QUOTE '''', ESCAPE '\')`, cols,
			CopyFormat{CSV: true, Delimiter: ';', Null: "NULL", Quote: '\'', Escape: '\\'}},
		{"samples", "(DELIMITER '|', NULL 'NULL')", cols, CopyFormat{Delimiter: '|', Null: "NULL"}},
		{"samples", "(NULL '')", cols, CopyFormat{NullEmpty: true}},
		{"samples", "(HEADER)", cols, CopyFormat{Header: true}},
		{"(SELECT t FROM samples ORDER BY id)", "(FORMAT csv)", "t", CopyFormat{CSV: true}},
		{"(SELECT t FROM samples ORDER BY id)", "", "t", CopyFormat{}},
	} {
		sql := "COPY " + c.copy + " TO STDOUT"
		if c.options != "" {
			sql += " WITH " + c.options
		}
		var rec rowRecorder
		if _, err := conn.CopyTo(ctx, &rec, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		res := conn.ExecParams(ctx, "SELECT "+c.query+" FROM samples ORDER BY samples.id", nil, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		cc := copyCapture{SQL: sql, Format: c.format, Rows: rec.rows}
		for _, row := range res.Rows {
			fs := make([]*string, len(row))
			for i, v := range row {
				if v != nil {
					s := string(v)
					fs[i] = &s
				}
			}
			cc.Fields = append(cc.Fields, fs)
		}
		checkCapture(t, cc)
		if *capture {
			captures = append(captures, cc)
		}

		// Mask the text column of each row, write the rows back with
		// COPY FROM and read what the server made of them.
		if c.format.Header {
			continue
		}
		col := 1
		if c.query == "t" {
			col = 0
		}
		m := NewMasker(testKey)
		meth := mustMethod(t, MethodPartial, nil)
		var in bytes.Buffer
		var want []*string
		for _, row := range rec.rows {
			fields, err := SplitCopyRow(c.format, []byte(row), nil)
			if err != nil {
				t.Fatal(err)
			}
			out, isNull, err := m.Mask(nil, meth, Column{TypeOID: pgtype.TextOID}, fields[col])
			if err != nil {
				t.Fatal(err)
			}
			if isNull {
				out = nil
			}
			fields[col] = out
			in.Write(AppendCopyRow(nil, c.format, fields))
			if out == nil {
				want = append(want, nil)
			} else {
				s := string(out)
				want = append(want, &s)
			}
		}
		mustExec(t, ctx, conn, "DROP TABLE IF EXISTS back; CREATE TABLE back AS SELECT "+strings.ReplaceAll(c.query, "::text", "")+" FROM samples WITH NO DATA")
		if _, err := conn.CopyFrom(ctx, &in, "COPY back FROM STDIN"+strings.TrimSuffix(" WITH "+c.options, " WITH ")); err != nil {
			t.Fatalf("COPY FROM of masked rows (%q): %v", in.String(), err)
		}
		res = conn.ExecParams(ctx, "SELECT * FROM back", nil, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		for i, row := range res.Rows {
			got := row[col]
			if (got == nil) != (want[i] == nil) || got != nil && string(got) != *want[i] {
				t.Errorf("%s: row %d read back %q; want %v", sql, i, got, want[i])
			}
		}
	}
	if *capture {
		b, err := json.MarshalIndent(captures, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "copy_captures.json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var captures []copyCapture

func mustExec(t *testing.T, ctx context.Context, conn *pgconn.PgConn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// testPostgresValues hands every masked value of TestMask's cases to the
// server as a parameter of its type, in its format: the server's input and
// receive functions must accept it, and print it as Mask printed it.
func testPostgresValues(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	m := NewMasker(testKey)
	for _, c := range maskCases() {
		if kindOf(Column{TypeOID: c.oid}) == kindUnknown {
			continue
		}
		meth := mustMethod(t, c.method, c.params)
		var printed [2]string
		for _, format := range []int16{textFmt, binaryFmt} {
			col := Column{TypeOID: c.oid, TypeMod: c.typmod, Format: format}
			in := []byte(c.in)
			if format == binaryFmt {
				in = binaryOf(t, c.oid, c.in)
			}
			out, isNull, err := m.Mask(nil, meth, col, in)
			if err != nil || isNull {
				printed[format] = null
				continue
			}
			res := conn.ExecParams(ctx, "SELECT $1", [][]byte{out}, []uint32{c.oid}, []int16{format}, []int16{textFmt}).Read()
			if res.Err != nil {
				t.Errorf("%s %s format %d: the server refuses %q: %v", typeName(c.oid), meth, format, out, res.Err)
				continue
			}
			printed[format] = string(res.Rows[0][0])
			if format == textFmt && printed[format] != string(out) && c.oid != pgtype.BPCharOID {
				t.Errorf("%s %s: the server prints %q as %q", typeName(c.oid), meth, out, printed[format])
			}
		}
		if printed[0] != printed[1] {
			t.Errorf("%s %s of %q: text format gives %q, binary %q", typeName(c.oid), meth, c.in, printed[0], printed[1])
		}
	}
}

// testPostgresFloats checks that appendPGFloat prints floats as the server
// does, so that the hash of a float is the same in both formats.
func testPostgresFloats(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1.5, 1234567, 12345678, 1e14, 1e15, 123456789012345678,
		1e-4, 1e-5, 0.00012345, 1.5e300, -2.5e-300, 1 << 53, 3.4028234663852886e38, 1e6, 100000, math.NaN(),
		math.Inf(1), math.Inf(-1), math.Pi, 4111111111111111}
	for _, bits := range []int{32, 64} {
		typ := map[int]string{32: "float4", 64: "float8"}[bits]
		for _, f := range values {
			if bits == 32 {
				f = float64(float32(f))
			}
			lit := strconv.FormatFloat(f, 'g', -1, bits)
			if math.IsInf(f, 1) {
				lit = "Infinity"
			} else if math.IsInf(f, -1) {
				lit = "-Infinity"
			}
			res := conn.ExecParams(ctx, fmt.Sprintf("SELECT '%s'::%s", lit, typ), nil, nil, nil, nil).Read()
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if got := string(appendPGFloat(nil, f, bits)); got != string(res.Rows[0][0]) {
				t.Errorf("%s %v: appendPGFloat prints %q; the server %q", typ, f, got, res.Rows[0][0])
			}
		}
	}
}

// testPostgresNumeric checks that appendNumericText prints binary numerics
// as the server prints them in text.
func testPostgresNumeric(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	for _, v := range []string{"0", "0.00", "-0.5", "12345.678", "1e-20", "-123456789012345678901234567890.123456789",
		"NaN", "Infinity", "-Infinity", "10000", "100000000.0000", "0.0001", "9999.9999", "1.10", "12.50"} {
		res := conn.ExecParams(ctx, "SELECT $1::numeric, $1::numeric", [][]byte{[]byte(v)}, nil, nil, []int16{textFmt, binaryFmt}).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		got, err := appendNumericText(nil, res.Rows[0][1])
		if err != nil || string(got) != string(res.Rows[0][0]) {
			t.Errorf("numeric %s: binary %x prints %q, %v; the server %q", v, res.Rows[0][1], got, err, res.Rows[0][0])
		}
	}
}
