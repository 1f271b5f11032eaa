package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder walks a yaml.Node tree into a Go value strictly. yaml.v3's own
// strict mode (KnownFields) exists only on yaml.Decoder and reports a Go type
// rather than a key path, so mappings are walked here: every key must name a
// field (its yaml tag), duplicates are errors, and every key's line is
// recorded by key path for the errors Validate reports later. Leaves
// (strings, numbers, durations, pointers) and types that implement
// yaml.Unmarshaler when written as a scalar are decoded by yaml.v3.
//
// Aliases and merge keys ("<<: *base") are followed; a budget of visited
// nodes, proportional to the document's size, stops alias bombs.
type decoder struct {
	file    string
	lines   map[string]int
	errs    []error
	budget  int
	merging map[*yaml.Node]bool // mappings being flattened, to catch a merge of itself
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) errorf(line int, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Err: fmt.Errorf(format, args...)})
}

// spend takes one unit of the budget and reports whether any was left.
func (d *decoder) spend(line int) bool {
	if d.budget <= 0 {
		return false
	}
	d.budget--
	if d.budget == 0 {
		d.errorf(line, "", "document too complex: too many nodes through aliases and merge keys")
		return false
	}
	return true
}

// resolve follows aliases to the node they name.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// decodeValue decodes n into v. key is v's key path and line the line where
// n is written (for an alias, where the alias is used).
func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, key string, line int) {
	if !d.spend(line) {
		return
	}
	if key != "" {
		d.lines[key] = line
	}
	if v.Kind() == reflect.Struct {
		if f := v.FieldByName("Line"); f.IsValid() && f.Kind() == reflect.Int && f.CanSet() {
			f.SetInt(int64(line))
		}
	}
	n = d.resolve(n)
	if n == nil || isNull(n) {
		return
	}
	switch {
	case v.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		d.decodeStruct(n, v, key)
	case v.Kind() == reflect.Struct && !reflect.PointerTo(v.Type()).Implements(unmarshalerType):
		d.errorf(line, key, "want a mapping, got %s", describe(n))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			d.errorf(line, key, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decodeValue(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i), item.Line)
		}
		v.Set(s)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.leafError(err, key, line)
		}
	}
}

var typeErrorRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// leafError records an error from yaml.v3 decoding a leaf.
func (d *decoder) leafError(err error, key string, line int) {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Err: err})
		return
	}
	for _, msg := range te.Errors {
		l := line
		if m := typeErrorRE.FindStringSubmatch(msg); m != nil {
			l, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		d.errorf(l, key, "%s", msg)
	}
}

// pair is one key and value of a mapping; merged when it came through a merge key.
type pair struct {
	k, v   *yaml.Node
	merged bool
}

// decodeStruct decodes mapping n into struct v, field by yaml tag.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) {
	fields, names := fieldsOf(v.Type())
	// Merged keys first, explicit keys last: the last write wins, as the
	// merge key's specification asks.
	merged, explicit := d.flatten(n)
	seen := make(map[string]int, len(explicit))
	for _, p := range append(merged, explicit...) {
		if p.k.Kind != yaml.ScalarNode {
			d.errorf(p.k.Line, key, "a key must be a string, got %s", describe(p.k))
			continue
		}
		name := p.k.Value
		child := childKey(key, name)
		if !p.merged {
			if first, dup := seen[name]; dup {
				d.errorf(p.k.Line, child, "duplicate key (first at line %d)", first)
				continue
			}
			seen[name] = p.k.Line
		}
		i, ok := fields[name]
		if !ok {
			d.errs = append(d.errs, &Error{File: d.file, Line: p.k.Line, Key: child,
				Err: &unknownKeyError{key: child, hint: hint(key, name, names)}})
			continue
		}
		d.decodeValue(p.v, v.Field(i), child, p.k.Line)
	}
}

// flatten returns the pairs of mapping n: those that its merge keys bring
// in, lowest precedence first, and its own.
func (d *decoder) flatten(n *yaml.Node) (merged, explicit []pair) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !d.spend(k.Line) {
			return merged, explicit
		}
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merged = d.merge(v, k.Line, merged)
			continue
		}
		explicit = append(explicit, pair{k: k, v: v})
	}
	return merged, explicit
}

// merge appends to out the pairs that the value v of a merge key brings in:
// a mapping, or a list of mappings where earlier ones take precedence.
func (d *decoder) merge(v *yaml.Node, line int, out []pair) []pair {
	v = d.resolve(v)
	if v == nil {
		return out
	}
	var maps []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		maps = []*yaml.Node{v}
	case yaml.SequenceNode:
		for i := len(v.Content) - 1; i >= 0; i-- {
			maps = append(maps, d.resolve(v.Content[i]))
		}
	}
	if len(maps) == 0 {
		d.errorf(line, "", "<<: a merge key wants a mapping or a list of mappings, got %s", describe(v))
		return out
	}
	for _, m := range maps {
		if m == nil || m.Kind != yaml.MappingNode {
			d.errorf(line, "", "<<: a merge key wants a mapping or a list of mappings")
			continue
		}
		if d.merging[m] {
			d.errorf(line, "", "<<: a mapping merges itself")
			continue
		}
		if d.merging == nil {
			d.merging = map[*yaml.Node]bool{}
		}
		d.merging[m] = true
		mm, me := d.flatten(m)
		delete(d.merging, m)
		for _, p := range append(mm, me...) {
			out = append(out, pair{k: p.k, v: p.v, merged: true})
		}
	}
	return out
}

// fieldsOf maps the yaml names of t's fields to their indexes; names lists
// them in order.
func fieldsOf(t reflect.Type) (fields map[string]int, names []string) {
	fields = make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = i
		names = append(names, name)
	}
	return fields, names
}

// hint suggests what an unknown key under parent was meant to be.
func hint(parent, name string, names []string) string {
	if strings.HasSuffix(parent, ".credentials") && (name == "password" || name == "passthrough") {
		if name == "passthrough" {
			return ` (write "credentials: passthrough")`
		}
		return " (the config never holds a secret: use password_file or password_env)"
	}
	best, bestDist := "", 3
	for _, n := range names {
		if dist := editDistance(name, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	if best != "" && bestDist <= len(name)/2 {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isEmptyDocument(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.DocumentNode && (len(n.Content) == 0 || isNull(n.Content[0]))
}

// describe names a node's kind for an error. It never quotes the value,
// which might be a secret written in the wrong place.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// countNodes counts the nodes of the tree under n, aliases not followed.
func countNodes(n *yaml.Node, depth int) int {
	if n == nil || depth > 20000 {
		return 0
	}
	c := 1
	for _, ch := range n.Content {
		c += countNodes(ch, depth+1)
	}
	return c
}
