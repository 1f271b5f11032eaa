package mask

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestApply(t *testing.T) {
	m := NewMasker(testKey)
	email := mustMethod(t, MethodEmail, nil)
	last4 := mustMethod(t, MethodLast4, nil)
	redact := mustMethod(t, MethodRedact, nil)
	classified := &Action{Classifiers: []ClassifierRule{{CreditCard, last4}, {Email, email}, {PEMPrivateKey, redact}}}
	int8bin := binary.BigEndian.AppendUint64(nil, 4111111111111111)
	for _, c := range []struct {
		name  string
		a     *Action
		col   Column
		in    []byte
		want  string // null for NULL
		label string // evidence label; "" when nothing is masked
	}{
		{"no action", nil, Column{TypeOID: pgtype.TextOID}, []byte("alice@example.com"), "alice@example.com", ""},
		{"empty action", &Action{}, Column{TypeOID: pgtype.TextOID}, []byte("alice@example.com"), "alice@example.com", ""},
		{"column rule", &Action{Method: email, Label: "public.customers.email"}, Column{TypeOID: pgtype.TextOID}, []byte("alice@example.com"), "****@example.com", "public.customers.email"},
		{"column rule, NULL", &Action{Method: email, Label: "public.customers.email"}, Column{TypeOID: pgtype.TextOID}, nil, null, ""},
		{"classifier card", classified, Column{TypeOID: pgtype.TextOID}, []byte("4111-1111-1111-1111"), "****-****-****-1111", "classifier:credit_card"},
		{"classifier email", classified, Column{TypeOID: pgtype.VarcharOID, Format: 1}, []byte(" bob@example.org "), "****@example.org ", "classifier:email"},
		{"classifier miss", classified, Column{TypeOID: pgtype.TextOID}, []byte("hello"), "hello", ""},
		{"classifier int8 text", classified, Column{TypeOID: pgtype.Int8OID}, []byte("4111111111111111"), "1111", "classifier:credit_card"},
		{"classifier int8 binary", classified, Column{TypeOID: pgtype.Int8OID, Format: 1}, int8bin, string(binary.BigEndian.AppendUint64(nil, 1111)), "classifier:credit_card"},
		{"classifier int8 binary miss", classified, Column{TypeOID: pgtype.Int8OID, Format: 1}, binary.BigEndian.AppendUint64(nil, 42), string(binary.BigEndian.AppendUint64(nil, 42)), ""},
		{"classifier jsonb string", classified, Column{TypeOID: pgtype.JSONBOID, Format: 1}, []byte("\x01\"alice@example.com\""), "\x01\"****@example.com\"", "classifier:email"},
		{"classifier json escaped", classified, Column{TypeOID: pgtype.JSONOID}, []byte(`"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"`), `"****"`, "classifier:pem_private_key"},
		{"classifier json object", classified, Column{TypeOID: pgtype.JSONOID}, []byte(`{"card":"4111111111111111"}`), `{"card":"4111111111111111"}`, ""},
		{"classifier uuid binary", classified, Column{TypeOID: pgtype.UUIDOID, Format: 1}, bytes.Repeat([]byte{1}, 16), string(bytes.Repeat([]byte{1}, 16)), ""},
		{"classifier unknown type text", classified, Column{TypeOID: 99999}, []byte("alice@example.com"), null, "classifier:email"},
		{"classifier unknown name", &Action{Classifiers: []ClassifierRule{{"passport", redact}}}, Column{TypeOID: pgtype.TextOID}, []byte("X1234567"), "X1234567", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := m.NewEvidence()
			in := bytes.Clone(c.in)
			out, isNull, err := m.Apply(make([]byte, 0, 64), c.a, c.col, in, ev)
			if err != nil {
				t.Fatal(err)
			}
			got := string(out)
			if isNull {
				got = null
			}
			if got != c.want {
				t.Errorf("got %q; want %q", got, c.want)
			}
			if c.label == "" {
				if ev.Values() != 0 {
					t.Errorf("evidence of %d values; want none", ev.Values())
				}
				if in != nil && !isNull && &out[0] != &in[0] {
					t.Error("an unmasked value was copied")
				}
				return
			}
			if s := ev.Summary(); s.Values != 1 || s.PerLabel[c.label] != 1 {
				t.Errorf("evidence %+v; want one value labelled %q", s, c.label)
			}
		})
	}
}

// benchRows are 6-column rows as a proxy sees them: id int8 (binary),
// email text (a column rule), note text (classifiers), created timestamptz
// (binary), amount numeric (text), name text.
func benchRows() [][][]byte {
	ts := binary.BigEndian.AppendUint64(nil, 786_000_000_000_000)
	var rows [][][]byte
	notes := []string{"call back tomorrow", "4111 1111 1111 1111", "order 2026-000123 shipped", "bob@example.org", "2026-12-04 12:30:45", "ok"}
	for i, note := range notes {
		rows = append(rows, [][]byte{
			binary.BigEndian.AppendUint64(nil, uint64(1000+i)),
			[]byte("customer" + string(rune('a'+i)) + "@example.com"),
			[]byte(note),
			ts,
			[]byte("1234.50"),
			[]byte("Alice Example"),
		})
	}
	return rows
}

var benchCols = []Column{
	{TypeOID: pgtype.Int8OID, Format: 1},
	{TypeOID: pgtype.TextOID},
	{TypeOID: pgtype.TextOID},
	{TypeOID: pgtype.TimestamptzOID, Format: 1},
	{TypeOID: pgtype.NumericOID},
	{TypeOID: pgtype.TextOID},
}

func benchActions(t testing.TB) []Action {
	return []Action{
		{},
		{Method: mustMethod(t, MethodEmail, nil), Label: "public.customers.email"},
		{Classifiers: []ClassifierRule{
			{CreditCard, mustMethod(t, MethodLast4, nil)},
			{Email, mustMethod(t, MethodEmail, nil)},
			{Phone, mustMethod(t, MethodPartial, nil)},
		}},
		{}, {}, {},
	}
}

// applyRows masks rows into the wire form of their DataRows, as a proxy
// would: each value is copied into out right after Apply.
func applyRows(m *Masker, actions []Action, rows [][][]byte, ev *Evidence, scratch, out []byte) []byte {
	for _, row := range rows {
		out = out[:0]
		for i, v := range row {
			val, isNull, _ := m.Apply(scratch[:0], &actions[i], benchCols[i], v, ev)
			if isNull {
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
				continue
			}
			out = binary.BigEndian.AppendUint32(out, uint32(len(val)))
			out = append(out, val...)
		}
	}
	return out
}

func TestApplyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	m := NewMasker(testKey)
	actions, rows, ev := benchActions(t), benchRows(), m.NewEvidence()
	scratch, out := make([]byte, 0, 256), make([]byte, 0, 1024)
	applyRows(m, actions, rows, ev, scratch, out) // labels seen once
	if n := testing.AllocsPerRun(50, func() { applyRows(m, actions, rows, ev, scratch, out) }); n != 0 {
		t.Errorf("Apply allocates %v times per 6 rows; want 0", n)
	}
}

// BenchmarkApply compares masking rows (one column rule, one classified
// column, six columns) with copying them unmasked.
func BenchmarkApply(b *testing.B) {
	m := NewMasker(testKey)
	rows, ev := benchRows(), m.NewEvidence()
	scratch, out := make([]byte, 0, 256), make([]byte, 0, 1024)
	for _, bc := range []struct {
		name    string
		actions []Action
	}{
		{"passthrough", make([]Action, 6)},
		{"masked", benchActions(b)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out = applyRows(m, bc.actions, rows, ev, scratch, out)
				ev.Reset()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
		})
	}
}

func TestApplyClassifyBinaryAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	m := NewMasker(testKey)
	a := &Action{Classifiers: []ClassifierRule{{CreditCard, mustMethod(t, MethodLast4, nil)}, {Phone, mustMethod(t, MethodRedact, nil)}}}
	ev := m.NewEvidence()
	scratch := make([]byte, 0, 64)
	values := []struct {
		col Column
		v   []byte
	}{
		{Column{TypeOID: pgtype.Int8OID, Format: 1}, binary.BigEndian.AppendUint64(nil, 42)},
		{Column{TypeOID: pgtype.Int8OID, Format: 1}, binary.BigEndian.AppendUint64(nil, 4111111111111111)},
		{Column{TypeOID: pgtype.Int4OID, Format: 1}, binary.BigEndian.AppendUint32(nil, 7)},
		{Column{TypeOID: pgtype.NumericOID, Format: 1}, binaryOf(t, pgtype.NumericOID, "4111111111111111")},
		{Column{TypeOID: pgtype.NumericOID, Format: 1}, binaryOf(t, pgtype.NumericOID, "12.50")},
		{Column{TypeOID: pgtype.InetOID, Format: 1}, binaryOf(t, pgtype.InetOID, "192.168.1.1")},
		{Column{TypeOID: pgtype.JSONBOID, Format: 1}, []byte("\x01\"4111111111111111\"")},
	}
	for _, v := range values {
		m.Apply(scratch, a, v.col, v.v, ev)
	}
	n := testing.AllocsPerRun(100, func() {
		for _, v := range values {
			m.Apply(scratch, a, v.col, v.v, ev)
		}
	})
	if n != 0 {
		t.Errorf("classifying binary values allocates %v times; want 0", n)
	}
}
