package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestPgxBatch(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t)
	ctx := t.Context()
	if _, err := c.Exec(ctx, "CREATE TABLE b (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	batch := &pgx.Batch{}
	for i := range 100 {
		batch.Queue("INSERT INTO b VALUES ($1, $2)", i, fmt.Sprint("v", i))
	}
	batch.Queue("SELECT count(*) FROM b")
	br := c.SendBatch(ctx, batch)
	for i := range 100 {
		if _, err := br.Exec(); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	var n int
	if err := br.QueryRow().Scan(&n); err != nil || n != 100 {
		t.Fatalf("count: got %d, %v; want 100", n, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	// An error in the middle of a batch rolls the batch back (one implicit
	// transaction) and leaves the connection usable.
	batch = &pgx.Batch{}
	batch.Queue("INSERT INTO b VALUES (1000, 'x')")
	batch.Queue("INSERT INTO b VALUES (1, 'duplicate')")
	batch.Queue("INSERT INTO b VALUES (1001, 'x')")
	err := c.SendBatch(ctx, batch).Close()
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "23505" {
		t.Fatalf("batch with a duplicate: got %v; want 23505", err)
	}
	if err := c.QueryRow(ctx, "SELECT count(*) FROM b").Scan(&n); err != nil || n != 100 {
		t.Fatalf("count after the failed batch: got %d, %v; want 100", n, err)
	}
}

func TestPgxPipeline(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t).PgConn()
	ctx := t.Context()
	pl := c.StartPipeline(ctx)
	pl.SendPrepare("s1", "SELECT $1::int + 1", nil)
	pl.SendQueryPrepared("s1", [][]byte{[]byte("41")}, nil, nil)
	pl.SendQueryParams("SELECT $1::text || '!'", [][]byte{[]byte("hi")}, nil, nil, []int16{1})
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	pl.SendQueryPrepared("s1", [][]byte{[]byte("1")}, nil, []int16{1})
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		res, err := pl.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		switch r := res.(type) {
		case *pgconn.StatementDescription:
		case *pgconn.ResultReader:
			rr := r.Read()
			if rr.Err != nil {
				t.Fatal(rr.Err)
			}
			for _, row := range rr.Rows {
				got = append(got, fmt.Sprintf("%q", row[0]))
			}
		case *pgconn.PipelineSync:
		case nil:
			goto done
		}
		if len(got) == 3 {
			if _, err := pl.GetResults(); err != nil { // the last sync
				t.Fatal(err)
			}
			break
		}
	}
done:
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if want := `"42" "hi!" "\x00\x00\x00\x02"`; strings.Join(got, " ") != want {
		t.Errorf("pipeline results: got %s; want %s", strings.Join(got, " "), want)
	}
}

func TestPgxBinaryAndCache(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t)
	ctx := t.Context()
	ts := time.Date(2024, 2, 29, 12, 30, 0, 123000, time.UTC)
	const q = "SELECT $1::int8, $2::float8, $3::timestamptz, $4::numeric, $5::bytea, $6::int4[], $7::uuid, $8::jsonb"
	for round := range 3 { // the statement cache: Parse and Describe once, then Bind/Execute only
		var (
			i8   int64
			f8   float64
			tz   time.Time
			num  pgtype.Numeric
			raw  []byte
			arr  []int32
			uuid pgtype.UUID
			doc  map[string]any
		)
		err := c.QueryRow(ctx, q, int64(1)<<40, 2.5, ts, "12345.678", []byte{0, 1, 2, 255}, []int32{1, 2, 3},
			"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", map[string]any{"k": "v"}).
			Scan(&i8, &f8, &tz, &num, &raw, &arr, &uuid, &doc)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		nv, _ := num.Value()
		if i8 != 1<<40 || f8 != 2.5 || !tz.Equal(ts) || nv != "12345.678" || string(raw) != "\x00\x01\x02\xff" ||
			fmt.Sprint(arr) != "[1 2 3]" || fmt.Sprintf("%x", uuid.Bytes) != "a0eebc999c0b4ef8bb6d6bb9bd380a11" || doc["k"] != "v" {
			t.Errorf("round %d: got %v %v %v %v %x %v %x %v", round, i8, f8, tz, nv, raw, arr, uuid.Bytes, doc)
		}
	}
	// Large results stream through.
	var n, total int64
	rows, err := c.Query(ctx, "SELECT g, repeat('x', 1000) FROM generate_series(1, 50000) g")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var g int64
		var s string
		if err := rows.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		n++
		total += g
	}
	if err := rows.Err(); err != nil || n != 50000 || total != 50000*50001/2 {
		t.Errorf("large result: %d rows, sum %d, %v", n, total, err)
	}
}

func TestPgxCopyFrom(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t)
	ctx := t.Context()
	if _, err := c.Exec(ctx, "CREATE TABLE cf (id int, name text, at timestamptz)"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 10000)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprint("name-", i), time.Unix(int64(i), 0)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"cf"}, []string{"id", "name", "at"}, pgx.CopyFromRows(rows))
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("CopyFrom: %d, %v", n, err)
	}
	var sum int64
	if err := c.QueryRow(ctx, "SELECT sum(id) FROM cf").Scan(&sum); err != nil || sum != 9999*10000/2 {
		t.Fatalf("sum: %d, %v", sum, err)
	}
	// COPY TO STDOUT through pgconn.
	var out strings.Builder
	tag, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT id FROM cf WHERE id < 3 ORDER BY id) TO STDOUT")
	if err != nil || tag.RowsAffected() != 3 || out.String() != "0\n1\n2\n" {
		t.Fatalf("CopyTo: %q, %v, %v", out.String(), tag, err)
	}
}

func TestPgxListenNotify(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	listener, sender := p.connect(t), p.connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if _, err := listener.Exec(ctx, "LISTEN events"); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.Exec(ctx, "SELECT pg_notify('events', 'hello')"); err != nil {
		t.Fatal(err)
	}
	n, err := listener.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "events" || n.Payload != "hello" {
		t.Errorf("notification: got %s/%s", n.Channel, n.Payload)
	}
	// The notifying backend's pid is the upstream's: pgx does not use it.
	if n.PID == 0 {
		t.Error("notification without a pid")
	}
}
