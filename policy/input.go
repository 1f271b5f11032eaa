package policy

import (
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// inputValue builds the Rego value of in directly, without a JSON round
// trip (only the identity, of a type this package does not know, takes
// one). It must equal the value of in's JSON form, nil slices aside: a test
// holds it to that.
func inputValue(in *Input) (ast.Value, error) {
	id, err := identityValue(in.Identity)
	if err != nil {
		return nil, fmt.Errorf("input identity: %w", err)
	}
	return ast.NewObject(
		item("identity", ast.NewTerm(id)),
		item("target", ast.ObjectTerm(
			item("name", ast.StringTerm(in.Target.Name)),
			item("protocol", ast.StringTerm(in.Target.Protocol)),
			item("address", ast.StringTerm(in.Target.Address)),
		)),
		item("session", ast.NewTerm(sessionValue(&in.Session))),
		item("request", ast.NewTerm(requestValue(&in.Request))),
	), nil
}

func item(k string, v *ast.Term) [2]*ast.Term {
	return [2]*ast.Term{ast.StringTerm(k), v}
}

func identityValue(id any) (ast.Value, error) {
	switch v := id.(type) {
	case nil:
		return ast.NewObject(), nil
	case *PreparedIdentity:
		return v.value, nil
	case ast.Value:
		return v, nil
	case map[string]any:
		return ast.InterfaceToValue(v)
	}
	b, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	var x any
	if err := util.UnmarshalJSON(b, &x); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(x)
}

func sessionValue(s *Session) ast.Value {
	kvs := make([][2]*ast.Term, 0, 5)
	kvs = append(kvs,
		item("id", ast.StringTerm(s.ID)),
		item("database", ast.StringTerm(s.Database)),
		item("user", ast.StringTerm(s.User)),
		item("application_name", ast.StringTerm(s.ApplicationName)),
	)
	if len(s.Options) > 0 {
		opts := make([][2]*ast.Term, 0, len(s.Options))
		for k, v := range s.Options {
			opts = append(opts, item(k, ast.StringTerm(v)))
		}
		kvs = append(kvs, item("options", ast.ObjectTerm(opts...)))
	}
	return ast.NewObject(kvs...)
}

func requestValue(r *Request) ast.Value {
	tables := make([]*ast.Term, len(r.Tables))
	for i, t := range r.Tables {
		tables[i] = ast.ObjectTerm(
			item("schema", ast.StringTerm(t.Schema)),
			item("name", ast.StringTerm(t.Name)),
			item("access", ast.StringTerm(t.Access)),
		)
	}
	return ast.NewObject(
		item("kind", ast.StringTerm(r.Kind)),
		item("sql", ast.StringTerm(r.SQL)),
		item("fingerprint", ast.StringTerm(r.Fingerprint)),
		item("commands", stringArray(r.Commands)),
		item("tables", ast.ArrayTerm(tables...)),
		item("functions", stringArray(r.Functions)),
		item("read_only", ast.BooleanTerm(r.ReadOnly)),
	)
}

func stringArray(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

// PreparedIdentity is an identity made ready for many decisions: its Rego
// value and its decision cache key are computed once, not per statement.
// A protocol engine prepares the session's identity at connect and puts it
// in every Input.Identity of the session. It must not change afterwards.
type PreparedIdentity struct {
	src   any
	value ast.Value
	key   identityKey
	keyOK bool
}

// PrepareIdentity prepares id (a pkg/identity.Workload, a pointer to one,
// or anything Input.Identity accepts).
func PrepareIdentity(id any) (*PreparedIdentity, error) {
	if p, ok := id.(*PreparedIdentity); ok {
		return p, nil
	}
	v, err := identityValue(id)
	if err != nil {
		return nil, fmt.Errorf("prepare identity: %w", err)
	}
	p := &PreparedIdentity{src: id, value: v}
	p.key, p.keyOK = identityKeyOf(id)
	return p, nil
}

// Identity is the identity PrepareIdentity was given.
func (p *PreparedIdentity) Identity() any { return p.src }

// MarshalJSON writes the prepared identity's own JSON.
func (p *PreparedIdentity) MarshalJSON() ([]byte, error) { return json.Marshal(p.src) }
