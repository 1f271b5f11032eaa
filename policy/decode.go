package policy

import (
	"encoding/json"
	"fmt"
	"time"
)

// decodeDecision reads the value of data.tollgate.decision (JSON-shaped:
// map[string]any, []any, string, bool, json.Number or float64, nil) into a
// Decision. Unknown fields are ignored; a known field of the wrong type or
// with a value outside the contract is an error naming the field, since a
// decision the data path cannot read in full must not be half-applied.
func decodeDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("decision is %s, want an object", typeName(v))
	}
	var d Decision
	var err error
	if d.Allow, err = optBool(obj, "allow", "allow"); err != nil {
		return Decision{}, err
	}
	if d.Reason, err = optString(obj, "reason", "reason"); err != nil {
		return Decision{}, err
	}
	if d.Cache, err = optBool(obj, "cache", "cache"); err != nil {
		return Decision{}, err
	}
	if d.Record, err = optString(obj, "record", "record"); err != nil {
		return Decision{}, err
	}
	switch d.Record {
	case "", RecordFull, RecordMetadata:
	default:
		return Decision{}, fmt.Errorf("record: %q is not %q or %q", d.Record, RecordFull, RecordMetadata)
	}
	if a, ok := obj["approval"]; ok && a != nil {
		ap, err := decodeApproval(a)
		if err != nil {
			return Decision{}, err
		}
		d.Approval = ap
	}
	if m, ok := obj["mask"]; ok && m != nil {
		list, ok := m.([]any)
		if !ok {
			return Decision{}, fmt.Errorf("mask is %s, want an array", typeName(m))
		}
		for i, e := range list {
			r, err := decodeMaskRule(e, fmt.Sprintf("mask[%d]", i))
			if err != nil {
				return Decision{}, err
			}
			d.Mask = append(d.Mask, r)
		}
	}
	return d, nil
}

func decodeApproval(v any) (*Approval, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("approval is %s, want an object", typeName(v))
	}
	var a Approval
	var err error
	if a.Required, err = optBool(obj, "required", "approval.required"); err != nil {
		return nil, err
	}
	if a.Scope, err = optString(obj, "scope", "approval.scope"); err != nil {
		return nil, err
	}
	switch a.Scope {
	case "":
		a.Scope = ScopeStatement
	case ScopeStatement, ScopeSession:
	default:
		return nil, fmt.Errorf("approval.scope: %q is not %q or %q", a.Scope, ScopeStatement, ScopeSession)
	}
	if a.Timeout, err = optString(obj, "timeout", "approval.timeout"); err != nil {
		return nil, err
	}
	if a.Timeout != "" {
		t, err := time.ParseDuration(a.Timeout)
		if err != nil || t <= 0 {
			return nil, fmt.Errorf("approval.timeout: %q is not a positive duration such as \"10m\"", a.Timeout)
		}
	}
	if ap, ok := obj["approvers"]; ok && ap != nil {
		list, ok := ap.([]any)
		if !ok {
			return nil, fmt.Errorf("approval.approvers is %s, want an array of strings", typeName(ap))
		}
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("approval.approvers[%d] is %s, want a string", i, typeName(e))
			}
			a.Approvers = append(a.Approvers, s)
		}
	}
	return &a, nil
}

func decodeMaskRule(v any, field string) (MaskRule, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return MaskRule{}, fmt.Errorf("%s is %s, want an object", field, typeName(v))
	}
	var m MaskRule
	var err error
	if m.Table, err = optString(obj, "table", field+".table"); err != nil {
		return MaskRule{}, err
	}
	if m.Column, err = optString(obj, "column", field+".column"); err != nil {
		return MaskRule{}, err
	}
	if m.Classifier, err = optString(obj, "classifier", field+".classifier"); err != nil {
		return MaskRule{}, err
	}
	if m.Method, err = optString(obj, "method", field+".method"); err != nil {
		return MaskRule{}, err
	}
	if m.Method == "" {
		return MaskRule{}, fmt.Errorf("%s.method: missing", field)
	}
	if m.Column == "" && m.Classifier == "" {
		return MaskRule{}, fmt.Errorf("%s: names neither a column nor a classifier", field)
	}
	for k, e := range obj {
		switch k {
		case "table", "column", "classifier", "method":
			continue
		}
		if m.Params == nil {
			m.Params = make(map[string]any, len(obj)-1)
		}
		m.Params[k] = e
	}
	return m, nil
}

func optBool(obj map[string]any, key, field string) (bool, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s is %s, want a boolean", field, typeName(v))
	}
	return b, nil
}

func optString(obj map[string]any, key, field string) (string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is %s, want a string", field, typeName(v))
	}
	return s, nil
}

// typeName names a JSON-shaped value's type as Rego would.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64, int, int64, uint64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("a %T", v)
	}
}
