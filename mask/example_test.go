package mask_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/mask"
	"github.com/tollgate-dev/tollgate/policy"
)

// A proxy masks the DataRows of one statement: one Action per result
// column, built from the policy's mask rules and the RowDescription.
func Example() {
	dir, _ := os.MkdirTemp("", "mask-example")
	defer os.RemoveAll(dir)
	key, err := mask.LoadOrCreateKey(filepath.Join(dir, "keys", "mask.key"))
	if err != nil {
		panic(err)
	}
	m := mask.NewMasker(key)

	emailRule := policy.MaskRule{Table: "public.customers", Column: "email", Method: "email"}
	cardRule := policy.MaskRule{Classifier: "credit_card", Method: "last4"}
	email, err := mask.RuleMethod(emailRule)
	if err != nil {
		panic(err)
	}
	last4, err := mask.RuleMethod(cardRule)
	if err != nil {
		panic(err)
	}

	// SELECT id, email, note FROM public.customers
	cols := []mask.Column{
		{TypeOID: pgtype.Int4OID},
		{TypeOID: pgtype.VarcharOID, TypeMod: -1},
		{TypeOID: pgtype.TextOID},
	}
	actions := []mask.Action{
		{},
		{Method: email, Label: "public.customers.email"},
		{Classifiers: []mask.ClassifierRule{{Name: cardRule.Classifier, Method: last4}}},
	}
	rows := [][][]byte{
		{[]byte("1"), []byte("alice@example.com"), []byte("call back tomorrow")},
		{[]byte("2"), []byte("bob@example.org"), []byte("4111 1111 1111 1111")},
		{[]byte("3"), nil, nil},
	}

	ev := m.NewEvidence()
	var scratch []byte
	for _, row := range rows {
		var sent []string
		for i, v := range row {
			out, null, err := m.Apply(scratch[:0], &actions[i], cols[i], v, ev)
			if err != nil {
				panic(err)
			}
			if null {
				sent = append(sent, "NULL")
			} else {
				sent = append(sent, fmt.Sprintf("%q", out)) // a proxy copies out into its DataRow
			}
		}
		fmt.Println(strings.Join(sent, " "))
	}
	s := ev.Summary()
	s.OriginalsHMAC, s.MaskedSHA256 = "…", "…" // keyed by a new random key
	b, _ := json.Marshal(s)
	fmt.Println(string(b))
	// Output:
	// "1" "****@example.com" "call back tomorrow"
	// "2" "****@example.org" "**** **** **** 1111"
	// "3" NULL NULL
	// {"columns":["public.customers.email"],"classifiers":["credit_card"],"values":3,"per_column":{"classifier:credit_card":1,"public.customers.email":2},"originals_hmac":"…","masked_sha256":"…"}
}

// COPY rows are split into fields, masked like DataRow values and joined
// again.
func ExampleSplitCopyRow() {
	m := mask.NewMasker(make([]byte, mask.KeySize))
	partial, _ := mask.NewMethod(mask.MethodPartial, map[string]any{"keep_first": 0, "keep_last": 4})
	format := mask.CopyFormat{CSV: true}
	row := []byte("1,\"Doe, Jane\",555-123-4567\n")

	fields, err := mask.SplitCopyRow(format, row, nil)
	if err != nil {
		panic(err)
	}
	out, null, _ := m.Mask(nil, partial, mask.Column{TypeOID: pgtype.TextOID}, fields[2])
	if null {
		out = nil
	}
	fields[2] = out
	fmt.Printf("%q\n", mask.AppendCopyRow(nil, format, fields))
	// Output:
	// "1,\"Doe, Jane\",********4567\n"
}
