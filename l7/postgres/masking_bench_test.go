package postgres

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/mask"
	"github.com/tollgate-dev/tollgate/policy"
)

// BenchmarkMaskDataRow is the row hook's cost per row of six columns, two
// masked by column rules (no catalog: the actions are set as the catalog
// would resolve them).
func BenchmarkMaskDataRow(b *testing.B) {
	m := newMasking(bytes.Repeat([]byte{1}, 32), nil, nil)
	set, err := compileMask([]policy.MaskRule{
		{Table: "public.people", Column: "email", Method: "email"},
		{Table: "public.people", Column: "card", Method: "last4"},
	})
	if err != nil {
		b.Fatal(err)
	}
	res := &Result{Decision: Decision{mask: &maskPlan{set: set}}}
	s := &l7.Session{ID: "bench"}
	st := m.session(s)
	st.res = res
	st.actions = make([]mask.Action, 6)
	st.cols = make([]mask.Column, 6)
	st.bufs = make([][]byte, 6)
	for i := range st.cols {
		st.cols[i] = mask.Column{TypeOID: pgtype.TextOID}
	}
	st.actions[2] = mask.Action{Method: set.columns[0].method, Label: "public.people.email"}
	st.actions[3] = mask.Action{Method: set.columns[1].method, Label: "public.people.card"}
	st.any = true
	row := &pgproto3.DataRow{Values: [][]byte{
		[]byte("123456"), []byte("Person 123456"), []byte("person123456@example.com"),
		[]byte("4111 1111 1111 3456"), []byte("City 56"), []byte("792"),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.OnDataRow(s, res, row); err != nil {
			b.Fatal(err)
		}
	}
}
