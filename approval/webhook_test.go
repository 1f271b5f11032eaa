package approval

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hook is a webhook receiver that answers with the next status of a script
// (then 200), and records each attempt.
type hook struct {
	mu       sync.Mutex
	script   []int
	header   http.Header // set on each scripted answer
	attempts []attempt
	got      chan struct{}
}

type attempt struct {
	at   time.Time
	body []byte
	ct   string
}

func newHook(t *testing.T, script ...int) (*hook, *httptest.Server) {
	h := &hook{script: script, header: http.Header{}, got: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.attempts = append(h.attempts, attempt{time.Now(), body, r.Header.Get("Content-Type")})
		code := http.StatusOK
		if len(h.script) > 0 {
			code, h.script = h.script[0], h.script[1:]
			for k, v := range h.header {
				w.Header()[k] = v
			}
		}
		h.mu.Unlock()
		w.WriteHeader(code)
		io.WriteString(w, http.StatusText(code))
		h.got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hook) wait(t *testing.T, n int) []attempt {
	t.Helper()
	for range n {
		select {
		case <-h.got:
		case <-time.After(waitLimit):
			t.Fatalf("webhook got fewer than %d attempts", n)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]attempt(nil), h.attempts...)
}

// logs collects what the webhook logs.
type logs struct {
	mu    sync.Mutex
	lines []string
	done  chan string
}

func newLogs() *logs { return &logs{done: make(chan string, 100)} }

func (l *logs) log(msg string, err error) {
	line := msg
	if err != nil {
		line += ": " + err.Error()
	}
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	l.done <- line
}

func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func request() Request {
	return Request{ID: "ap-1a2b3c4d", State: StatePending, Identity: "billing-export", UID: 1001, User: "billing", PID: 4242,
		Origin: "/system.slice/billing-export.service", Target: "orders-db", Session: "s_42",
		SQL: "ALTER ROLE app PASSWORD 'hunter2'; DELETE FROM invoices WHERE note = '<b>'", Reason: "needs a DBA",
		Approvers: []string{"group:dba"}, Scope: ScopeStatement,
		Created: time.Now(), Expires: time.Now().Add(10 * time.Minute)}
}

func TestWebhookRetriesThenDelivers(t *testing.T) {
	h, srv := newHook(t, 500, 500)
	l := newLogs()
	w := NewWebhook(WebhookOptions{URL: srv.URL + "/services/SECRET-TOKEN", Backoff: 50 * time.Millisecond, Log: l.log})
	defer w.Close()
	w.Notify(request())
	at := h.wait(t, 3)
	if len(at) != 3 {
		t.Fatalf("%d attempts; want 3", len(at))
	}
	if d := at[1].at.Sub(at[0].at); d < 50*time.Millisecond {
		t.Errorf("second attempt after %s; want at least the 50ms backoff", d)
	}
	if d := at[2].at.Sub(at[1].at); d < 100*time.Millisecond {
		t.Errorf("third attempt after %s; want at least the doubled 100ms backoff", d)
	}
	// Delivered once: no fourth attempt.
	select {
	case <-h.got:
		t.Error("a fourth attempt after success")
	case <-time.After(300 * time.Millisecond):
	}
	if got := l.all(); strings.Count(got, "failed") != 2 || strings.Contains(got, "SECRET-TOKEN") {
		t.Errorf("logs:\n%s\nwant two failed attempts and never the URL", got)
	}
}

func TestWebhookNoRetryOn400(t *testing.T) {
	h, srv := newHook(t, 400)
	l := newLogs()
	w := NewWebhook(WebhookOptions{URL: srv.URL, Backoff: 10 * time.Millisecond, Log: l.log})
	defer w.Close()
	w.Notify(request())
	h.wait(t, 1)
	select {
	case line := <-l.done:
		if !strings.Contains(line, "not retried") || !strings.Contains(line, "400") {
			t.Errorf("log %q", line)
		}
	case <-time.After(waitLimit):
		t.Fatal("nothing logged")
	}
	select {
	case <-h.got:
		t.Error("retried after a 400")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestWebhookRetryAfter(t *testing.T) {
	h, srv := newHook(t, 429)
	h.header.Set("Retry-After", "1")
	w := NewWebhook(WebhookOptions{URL: srv.URL, Backoff: 10 * time.Millisecond})
	defer w.Close()
	w.Notify(request())
	at := h.wait(t, 2)
	if d := at[1].at.Sub(at[0].at); d < time.Second {
		t.Errorf("retried after %s; want the 1s Retry-After honoured", d)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	h, srv := newHook(t, 503, 503, 503, 503)
	l := newLogs()
	w := NewWebhook(WebhookOptions{URL: srv.URL, Backoff: 5 * time.Millisecond, MaxAttempts: 3, Log: l.log})
	defer w.Close()
	w.Notify(request())
	h.wait(t, 3)
	for line := range l.done {
		if strings.Contains(line, "gave up") {
			break
		}
	}
	select {
	case <-h.got:
		t.Error("a fourth attempt with MaxAttempts 3")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWebhookNetworkErrorRetried(t *testing.T) {
	_, srv := newHook(t)
	url := srv.URL + "/services/SECRET-TOKEN"
	srv.Close() // connection refused
	l := newLogs()
	w := NewWebhook(WebhookOptions{URL: url, Backoff: 5 * time.Millisecond, MaxAttempts: 2, Log: l.log})
	defer w.Close()
	w.Notify(request())
	var got []string
	for line := range l.done {
		got = append(got, line)
		if strings.Contains(line, "gave up") {
			break
		}
	}
	if len(got) != 2 || !strings.Contains(got[0], "refused") {
		t.Errorf("logs %q; want one retry then giving up", got)
	}
	if all := l.all(); strings.Contains(all, "SECRET-TOKEN") || strings.Contains(all, srv.URL) {
		t.Errorf("logs name the URL:\n%s", all)
	}
}

func TestWebhookPayload(t *testing.T) {
	h, srv := newHook(t)
	w := NewWebhook(WebhookOptions{URL: srv.URL})
	defer w.Close()
	r := request()
	w.Notify(r)
	at := h.wait(t, 1)
	if at[0].ct != "application/json" {
		t.Errorf("content type %q", at[0].ct)
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text *struct {
				Type, Text string
			} `json:"text"`
			Fields []struct {
				Type, Text string
			} `json:"fields"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(at[0].body, &msg); err != nil {
		t.Fatalf("payload %s: %v", at[0].body, err)
	}
	if !strings.Contains(msg.Text, "ap-1a2b3c4d") || !strings.Contains(msg.Text, "billing-export") || !strings.Contains(msg.Text, "orders-db") {
		t.Errorf("text %q", msg.Text)
	}
	var all strings.Builder
	for _, b := range msg.Blocks {
		if b.Type != "header" && b.Type != "section" {
			t.Errorf("block type %q", b.Type)
		}
		if b.Text != nil {
			all.WriteString(b.Text.Text + "\n")
		}
		for _, f := range b.Fields {
			if f.Type != "mrkdwn" {
				t.Errorf("field type %q", f.Type)
			}
			all.WriteString(f.Text + "\n")
		}
	}
	body := all.String()
	for _, want := range []string{
		"billing-export", "uid 1001", "pid 4242", "/system.slice/billing-export.service", // who
		"DELETE FROM invoices", "needs a DBA", // what
		"orders-db", "s_42", // where
		"group:dba", r.Expires.UTC().Format(time.RFC3339), // who may, until when
		"tollctl approvals approve ap-1a2b3c4d", "tollctl approvals deny ap-1a2b3c4d --reason", // how
		"&lt;b&gt;", // mrkdwn escaped
	} {
		if !strings.Contains(body, want) {
			t.Errorf("payload lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(string(at[0].body), "hunter2") {
		t.Errorf("payload holds the password literal:\n%s", at[0].body)
	}
}

func TestWebhookQueueBounded(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	l := newLogs()
	w := NewWebhook(WebhookOptions{URL: srv.URL, QueueSize: 2, Timeout: waitLimit, Log: l.log})
	defer w.Close()
	for range 10 {
		w.Notify(request()) // never blocks
	}
	select {
	case line := <-l.done:
		if !strings.Contains(line, "queue full") {
			t.Errorf("log %q", line)
		}
	case <-time.After(waitLimit):
		t.Error("a full queue was not reported")
	}
}

func TestRedactSQL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ALTER ROLE app PASSWORD 'x''y'", "ALTER ROLE app PASSWORD '***'"},
		{"create user u with encrypted password 'hunter2' login", "create user u with encrypted password '***' login"},
		{"ALTER ROLE app PASSWORD $$hunter2$$", "ALTER ROLE app PASSWORD '***'"},
		{"SELECT password FROM users", "SELECT password FROM users"},
	} {
		if got := RedactSQL(tc.in); got != tc.want {
			t.Errorf("RedactSQL(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestWebhookLogsNoEcho(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusUnprocessableEntity)
		w.Write(body) // an endpoint that echoes what it got
	}))
	defer srv.Close()
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "invalid_blocks")
	}))
	defer slack.Close()
	for _, tc := range []struct{ url, want string }{{srv.URL, "422 Unprocessable Entity"}, {slack.URL, "400 Bad Request: invalid_blocks"}} {
		l := newLogs()
		w := NewWebhook(WebhookOptions{URL: tc.url, Log: l.log})
		w.Notify(request())
		select {
		case line := <-l.done:
			if !strings.HasSuffix(line, tc.want) || strings.Contains(line, "DELETE") {
				t.Errorf("log %q; want it to end %q and never echo the message", line, tc.want)
			}
		case <-time.After(waitLimit):
			t.Error("nothing logged")
		}
		w.Close()
	}
}
