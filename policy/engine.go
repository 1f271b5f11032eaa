package policy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Defaults of Options.
const (
	DefaultTimeout   = 50 * time.Millisecond
	DefaultCacheSize = 4096
	DefaultDebounce  = 100 * time.Millisecond
)

// Reasons of the denials the engine itself makes, shown to the client.
const (
	reasonNoDecision = "policy gave no decision"
	reasonError      = "policy error"
	reasonMalformed  = "policy error: malformed decision"
	reasonTimeout    = "policy evaluation timed out"
	reasonCanceled   = "policy evaluation canceled"
)

// Options tune an Engine. The zero value is ready to use.
type Options struct {
	// Timeout bounds one evaluation; past it the request is denied.
	// Default DefaultTimeout.
	Timeout time.Duration
	// CacheSize bounds the decision cache (entries). Default
	// DefaultCacheSize; negative disables the cache.
	CacheSize int
	// Debounce is how long Watch waits for file events to settle before it
	// reloads. Default DefaultDebounce.
	Debounce time.Duration
	// StrictBuiltinErrors makes a failing built-in (1/0, to_number("x"))
	// an evaluation error, so the request is denied as "policy error" and
	// OnError hears why. By default, as with `opa eval`, it leaves its
	// expression undefined and evaluation goes on (usually to the default
	// decision). Default false.
	StrictBuiltinErrors bool
	// OnReload hears the outcome of each load that changes something: the
	// initial load in New, each new version put in force, and each failed
	// load (but not a repeat failure of the same files). version is the
	// policy in force afterwards: the new one when err is nil, the kept
	// previous one when err is not; "" means no policy is in force and
	// every request is denied. Called synchronously; may be nil.
	OnReload func(version string, err error)
	// OnError hears the detail of every engine-level denial (evaluation
	// error, time-out, undefined or malformed decision). The error may
	// quote input values: audit it, do not log it. Called synchronously on
	// the data path; keep it cheap. May be nil.
	OnError func(error)
	// Now is the clock for Status times. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	if o.Timeout < 0 || o.Debounce < 0 {
		return errors.New("policy: negative Timeout or Debounce")
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Debounce == 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Engine evaluates data.tollgate.decision for each request. It is safe for
// concurrent use; Reload swaps the policy atomically under running Decide
// calls.
type Engine struct {
	dir      string
	opts     Options
	noPolicy string
	cache    *decisionCache // nil when disabled

	cur atomic.Pointer[loaded]
	gen atomic.Uint64 // generations of loaded policies

	reloadMu sync.Mutex // serializes loads
	// Guarded by reloadMu for writes, statusMu for reads from Status.
	statusMu    sync.Mutex
	lastErr     error
	lastErrAt   time.Time
	lastFailure string // version of the files whose load failed last
}

// loaded is one policy in force; immutable once published.
type loaded struct {
	pq      rego.PreparedEvalQuery
	gen     uint64 // distinct for each load put in force
	version string // "" when no policy is loaded
	files   []string
	at      time.Time
}

// New returns an engine for the *.rego files under dir and loads them.
// Files named *_test.rego are not part of the policy (see Test). A
// missing, empty or broken policy does not fail New: the engine denies
// every request, saying why, until a load succeeds; Status and OnReload
// tell what happened. New fails only on invalid arguments.
func New(dir string, opts Options) (*Engine, error) {
	if dir == "" {
		return nil, errors.New("policy: empty policy dir")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	e := &Engine{
		dir:      dir,
		opts:     opts,
		noPolicy: "no policy loaded: tollgate denies everything until a policy is installed in " + dir,
	}
	if opts.CacheSize > 0 {
		e.cache = newDecisionCache(opts.CacheSize)
	}
	e.cur.Store(&loaded{})
	e.reload(true)
	return e, nil
}

// Dir is the policy directory.
func (e *Engine) Dir() string { return e.dir }

// Version is the policy in force's version: the sha256, in hex, of its
// files' relative paths and contents (test files excluded). Empty when no
// policy is loaded.
func (e *Engine) Version() string { return e.cur.Load().version }

// Status describes the policy in force, the last failed load and the
// decision cache.
func (e *Engine) Status() Status {
	l := e.cur.Load()
	s := Status{Dir: e.dir, Version: l.version, Loaded: l.at, Files: append([]string(nil), l.files...)}
	e.statusMu.Lock()
	if e.lastErr != nil {
		s.LastError = e.lastErr.Error()
		s.LastErrorAt = e.lastErrAt
	}
	e.statusMu.Unlock()
	if e.cache != nil {
		s.Cache = e.cache.stats()
	}
	return s
}

// Reload reads the directory again and puts its policy in force when it
// compiles. On failure the previous policy stays in force and the error is
// returned, kept in Status and passed to OnReload. Reloading unchanged
// files does nothing. The daemon calls it on SIGHUP; Watch calls it on
// file changes.
func (e *Engine) Reload() error { return e.reload(false) }

func (e *Engine) reload(initial bool) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	cur := e.cur.Load()

	files, err := readDir(e.dir, false)
	if err != nil {
		return e.failed(cur, "", err)
	}
	version := ""
	if len(files) > 0 {
		version = versionOf(files)
	}
	if version == cur.version && !initial {
		e.clearError()
		return nil
	}
	if version != "" && version == e.lastFailure && !initial {
		return e.lastErr
	}

	next := &loaded{gen: e.gen.Add(1)}
	if version != "" {
		next.at = e.opts.Now()
		pq, err := e.compile(files)
		if err != nil {
			return e.failed(cur, version, err)
		}
		next.pq, next.version = pq, version
		for _, f := range files {
			next.files = append(next.files, f.rel)
		}
	}
	e.cur.Store(next)
	if e.cache != nil {
		e.cache.purge()
	}
	e.clearError()
	if e.opts.OnReload != nil {
		e.opts.OnReload(next.version, nil)
	}
	return nil
}

func (e *Engine) compile(files []policyFile) (rego.PreparedEvalQuery, error) {
	mods, err := parseFiles(files)
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	c := newCompiler()
	if c.Compile(mods); c.Failed() {
		return rego.PreparedEvalQuery{}, c.Errors
	}
	if len(c.GetRules(decisionRef)) == 0 {
		return rego.PreparedEvalQuery{}, fmt.Errorf("no rule defines %s: declare `package tollgate` and a `decision` rule", DecisionQuery)
	}
	pq, err := rego.New(
		rego.Compiler(c),
		rego.Query(DecisionQuery),
		rego.StrictBuiltinErrors(e.opts.StrictBuiltinErrors),
	).PrepareForEval(context.Background())
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("prepare %s: %w", DecisionQuery, err)
	}
	return pq, nil
}

// failed records and reports a failed load of files of the given version,
// and returns the error, with the directory's name.
func (e *Engine) failed(cur *loaded, version string, err error) error {
	err = fmt.Errorf("load policy from %s: %w", e.dir, err)
	e.statusMu.Lock()
	e.lastErr, e.lastErrAt, e.lastFailure = err, e.opts.Now(), version
	e.statusMu.Unlock()
	if e.opts.OnReload != nil {
		e.opts.OnReload(cur.version, err)
	}
	return err
}

func (e *Engine) clearError() {
	e.statusMu.Lock()
	e.lastErr, e.lastErrAt, e.lastFailure = nil, time.Time{}, ""
	e.statusMu.Unlock()
}

// Decide judges one request. It never fails: whatever goes wrong (no
// policy, an undefined or malformed decision, an evaluation error, the
// time-out, ctx ending) is a deny whose Reason says so in general terms
// and whose Error carries the detail.
//
// A statement's decision is served from the cache when an earlier
// decision for the same key said "cache": true (see Decision.Cache).
func (e *Engine) Decide(ctx context.Context, in Input) Decision {
	l := e.cur.Load()
	if l.version == "" {
		return Decision{Reason: e.noPolicy}
	}
	var key cacheKey
	cacheable := false
	if e.cache != nil {
		if key, cacheable = keyOf(l.gen, &in); cacheable {
			if d, ok := e.cache.get(key); ok {
				d.Cached = true
				return d
			}
		}
	}
	d := e.eval(ctx, l, &in)
	d.PolicyVersion = l.version
	if cacheable && d.Cache && d.Error == "" {
		e.cache.put(key, d)
	}
	return d
}

func (e *Engine) eval(ctx context.Context, l *loaded, in *Input) (d Decision) {
	defer func() {
		if r := recover(); r != nil {
			d = e.deny(reasonError, fmt.Errorf("policy evaluation panicked: %v", r))
		}
	}()
	if err := ctx.Err(); err != nil {
		return e.deny(reasonCanceled, fmt.Errorf("policy evaluation: %w", err))
	}
	v, err := inputValue(in)
	if err != nil {
		return e.deny(reasonError, err)
	}
	tctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	rs, err := l.pq.Eval(tctx, rego.EvalParsedInput(v))
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return e.deny(reasonCanceled, fmt.Errorf("policy evaluation: %w", ctx.Err()))
		case tctx.Err() != nil || topdown.IsCancel(err):
			return e.deny(reasonTimeout, fmt.Errorf("policy evaluation exceeded %v", e.opts.Timeout))
		}
		return e.deny(reasonError, fmt.Errorf("evaluate %s: %w", DecisionQuery, err))
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return e.deny(reasonNoDecision, fmt.Errorf("%s is undefined for this input", DecisionQuery))
	}
	d, err = decodeDecision(rs[0].Expressions[0].Value)
	if err != nil {
		return e.deny(reasonMalformed, fmt.Errorf("%s: %w", DecisionQuery, err))
	}
	return d
}

func (e *Engine) deny(reason string, err error) Decision {
	if e.opts.OnError != nil {
		e.opts.OnError(err)
	}
	return Decision{Reason: reason, Error: err.Error()}
}
