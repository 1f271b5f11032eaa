package mask

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/policy"
)

// Masking method names, as a policy's mask rule "method" field uses them.
const (
	MethodRedact  = "redact"
	MethodPartial = "partial"
	MethodEmail   = "email"
	MethodLast4   = "last4"
	MethodHash    = "hash"
	MethodNull    = "null"
)

// methodParams lists each method's parameters.
var methodParams = map[string][]string{
	MethodRedact:  {"text"},
	MethodPartial: {"keep_first", "keep_last", "mask_char"},
	MethodEmail:   nil,
	MethodLast4:   nil,
	MethodHash:    {"length"},
	MethodNull:    nil,
}

var methodNames = func() []string {
	names := make([]string, 0, len(methodParams))
	for n := range methodParams {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}()

// Methods returns the names of all masking methods, sorted.
func Methods() []string { return slices.Clone(methodNames) }

// KnownMethod reports whether name is a masking method's name.
func KnownMethod(name string) bool {
	_, ok := methodParams[name]
	return ok
}

// Defaults of the methods' parameters.
const (
	DefaultRedactText = "****"
	DefaultKeepFirst  = 1
	DefaultKeepLast   = 1
	DefaultMaskChar   = '*'
	DefaultHashLength = 16
)

// Method is a compiled masking method with its parameters. It is immutable
// and safe for concurrent use.
type Method struct {
	name      string
	text      string // redact
	keepFirst int    // partial
	keepLast  int    // partial
	maskChar  string // partial, one rune
	hashLen   int    // hash, in hex digits
}

// NewMethod compiles a method from a mask rule's method name and params:
//
//	redact   text        the replacement (default "****")
//	partial  keep_first  characters kept at the start (default 1)
//	         keep_last   characters kept at the end (default 1)
//	         mask_char   the character that replaces the others (default "*")
//	hash     length      hex digits kept of the HMAC-SHA256 (1-64, default 16)
//	email, last4, null   no params
//
// Counts are non-negative integers (JSON numbers, Go integers or
// json.Number). Any other param is an error that names it; an unknown method
// is an error that names it and lists the known ones.
func NewMethod(name string, params map[string]any) (*Method, error) {
	allowed, ok := methodParams[name]
	if !ok {
		return nil, fmt.Errorf("unknown mask method %q (known: %s)", name, strings.Join(methodNames, ", "))
	}
	m := &Method{
		name:      name,
		text:      DefaultRedactText,
		keepFirst: DefaultKeepFirst,
		keepLast:  DefaultKeepLast,
		maskChar:  string(DefaultMaskChar),
		hashLen:   DefaultHashLength,
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad param reported is the same every time
	for _, k := range keys {
		v := params[k]
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("mask method %q: unknown param %q (it takes none)", name, k)
			}
			return nil, fmt.Errorf("mask method %q: unknown param %q (known: %s)", name, k, strings.Join(allowed, ", "))
		}
		var err error
		switch k {
		case "text":
			s, ok := v.(string)
			if !ok || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				err = fmt.Errorf("is %#v, want a UTF-8 string without NUL", v)
			}
			m.text = s
		case "keep_first":
			m.keepFirst, err = paramInt(v, 0, math.MaxInt32)
		case "keep_last":
			m.keepLast, err = paramInt(v, 0, math.MaxInt32)
		case "length":
			m.hashLen, err = paramInt(v, 1, 64)
		case "mask_char":
			s, ok := v.(string)
			if !ok || utf8.RuneCountInString(s) != 1 || !utf8.ValidString(s) || s == "\x00" {
				err = fmt.Errorf("is %#v, want one character", v)
			}
			m.maskChar = s
		}
		if err != nil {
			return nil, fmt.Errorf("mask method %q: param %q %w", name, k, err)
		}
	}
	return m, nil
}

// RuleMethod compiles the method of a policy's mask rule after checking that
// the rule's classifier, if it names one, is known.
func RuleMethod(r policy.MaskRule) (*Method, error) {
	if r.Classifier != "" && !KnownClassifier(r.Classifier) {
		return nil, fmt.Errorf("unknown classifier %q (known: %s)", r.Classifier, strings.Join(classifierNames, ", "))
	}
	return NewMethod(r.Method, r.Params)
}

func paramInt(v any, lo, hi int64) (int, error) {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint32:
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || x < float64(lo) || x > float64(hi) {
			return 0, fmt.Errorf("is %v, want an integer from %d to %d", x, lo, hi)
		}
		n = int64(x)
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return 0, fmt.Errorf("is %s, want an integer from %d to %d", x, lo, hi)
		}
		n = i
	default:
		return 0, fmt.Errorf("is %T, want an integer from %d to %d", v, lo, hi)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("is %d, want an integer from %d to %d", n, lo, hi)
	}
	return int(n), nil
}

// Name returns the method's name.
func (m *Method) Name() string { return m.name }

// String describes the method with its parameters, e.g.
// partial(keep_first=1,keep_last=4,mask_char="*").
func (m *Method) String() string {
	switch m.name {
	case MethodRedact:
		return fmt.Sprintf("redact(text=%q)", m.text)
	case MethodPartial:
		return fmt.Sprintf("partial(keep_first=%d,keep_last=%d,mask_char=%q)", m.keepFirst, m.keepLast, m.maskChar)
	case MethodHash:
		return fmt.Sprintf("hash(length=%d)", m.hashLen)
	}
	return m.name
}
