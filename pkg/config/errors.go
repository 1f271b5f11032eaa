package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrUnknownKey is wrapped by the *Error for a key the config does not define.
var ErrUnknownKey = errors.New("unknown key")

// Error is a problem at one key of the config file. Its message reads
// "file:line: key: problem"; for an unknown key, `file:line: unknown key "key"`.
type Error struct {
	File string // the name given to Parse or Load; may be empty
	Line int    // 1-based; 0 when unknown
	Key  string // key path such as "targets[1].address"; empty for the document itself
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	var uk *unknownKeyError
	if e.Key != "" && !errors.As(e.Err, &uk) {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// unknownKeyError names the unknown key itself, so Error leaves out the key prefix.
type unknownKeyError struct {
	key, hint string
}

func (e *unknownKeyError) Error() string {
	return fmt.Sprintf("unknown key %q%s", e.key, e.hint)
}

func (e *unknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

// maxErrors bounds how many problems one error reports.
const maxErrors = 20

// joinErrors sorts errs by line and joins them; nil for none, the error
// itself for one.
func joinErrors(errs []error) error {
	line := func(err error) int {
		var e *Error
		if errors.As(err, &e) && e.Line > 0 {
			return e.Line
		}
		return int(^uint(0) >> 1)
	}
	slices.SortStableFunc(errs, func(a, b error) int { return line(a) - line(b) })
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], fmt.Errorf("... and %d more", more))
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 parse error into an *Error with its line.
func syntaxError(file string, err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Err: errors.New(m[2])}
	}
	return &Error{File: file, Err: errors.New(strings.TrimPrefix(msg, "yaml: "))}
}

// parentKey returns the key that contains k: "a[1].b" -> "a[1]" -> "a" -> "".
func parentKey(k string) string {
	if i := strings.LastIndexAny(k, ".["); i >= 0 {
		return k[:i]
	}
	return ""
}

// childKey joins a parent key path and a field name.
func childKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}
