package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Webhook defaults.
const (
	DefaultWebhookTimeout  = 5 * time.Second
	DefaultWebhookAttempts = 5
	DefaultWebhookBackoff  = time.Second
	DefaultWebhookQueue    = 100
	DefaultHowToApprove    = "tollctl approvals approve %s"
	DefaultHowToDeny       = "tollctl approvals deny %s --reason TEXT"

	maxWebhookBackoff = 30 * time.Second
	maxRetryAfter     = time.Hour
	maxSQLInMessage   = 1500
)

// WebhookOptions configure NewWebhook.
type WebhookOptions struct {
	// URL receives a POST of a Slack-compatible JSON message for each new
	// request. It may hold a secret (Slack's do): it is never logged.
	URL string
	// Timeout bounds one attempt. Default 5s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts per request. Default 5.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt, doubled after
	// each further one, at most 30s. A Retry-After header (seconds or a
	// date) on a 429 or 5xx answer replaces it. Default 1s.
	Backoff time.Duration
	// HowToApprove and HowToDeny are the commands shown, with %s for the
	// request id. Defaults "tollctl approvals approve %s" and
	// "tollctl approvals deny %s --reason TEXT".
	HowToApprove string
	HowToDeny    string
	// QueueSize bounds the notifications waiting to be sent; Notify drops
	// (and logs) one that does not fit. Default 100.
	QueueSize int
	// Client sends the requests. Default: a new http.Client.
	Client *http.Client
	// Log, when set, hears about failed attempts and dropped messages.
	// Messages and errors never include the URL.
	Log func(msg string, err error)
}

// Webhook is a Notifier that posts each new request to a URL, from one
// sender goroutine with a bounded queue, retrying network errors, 5xx and
// 429 answers with backoff. Other answers are not retried.
type Webhook struct {
	o      WebhookOptions
	queue  chan Request
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook starts a webhook notifier; Close stops it.
func NewWebhook(o WebhookOptions) *Webhook {
	if o.Timeout <= 0 {
		o.Timeout = DefaultWebhookTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultWebhookAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultWebhookBackoff
	}
	if o.HowToApprove == "" {
		o.HowToApprove = DefaultHowToApprove
	}
	if o.HowToDeny == "" {
		o.HowToDeny = DefaultHowToDeny
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultWebhookQueue
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Log == nil {
		o.Log = func(string, error) {}
	}
	w := &Webhook{o: o, queue: make(chan Request, o.QueueSize), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Notify queues r; it never blocks.
func (w *Webhook) Notify(r Request) {
	if w.ctx.Err() != nil {
		return
	}
	select {
	case w.queue <- r:
	default:
		w.o.Log(fmt.Sprintf("approval webhook: queue full, notification of %s dropped", r.ID), nil)
	}
}

// Close stops the sender, abandoning queued notifications and the one
// being retried, and returns once it has stopped.
func (w *Webhook) Close() {
	w.cancel()
	<-w.done
}

func (w *Webhook) run() {
	defer close(w.done)
	for {
		select {
		case <-w.ctx.Done():
			return
		case r := <-w.queue:
			w.deliver(r)
		}
	}
}

// retryable is an attempt's failure worth another attempt, after wait when
// the server said (Retry-After).
type retryable struct {
	err  error
	wait time.Duration
}

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

func (w *Webhook) deliver(r Request) {
	body, err := json.Marshal(w.message(r))
	if err != nil {
		w.o.Log("approval webhook: encode "+r.ID, err)
		return
	}
	backoff := w.o.Backoff
	for attempt := 1; ; attempt++ {
		err := w.post(body)
		if err == nil {
			return
		}
		var re *retryable
		if !errors.As(err, &re) {
			w.o.Log(fmt.Sprintf("approval webhook: notification of %s refused, not retried", r.ID), err)
			return
		}
		if attempt >= w.o.MaxAttempts {
			w.o.Log(fmt.Sprintf("approval webhook: gave up on %s after %d attempts", r.ID, attempt), err)
			return
		}
		wait := backoff
		if re.wait > 0 {
			wait = re.wait
		}
		backoff = min(backoff*2, maxWebhookBackoff)
		if !r.Expires.IsZero() && time.Now().Add(wait).After(r.Expires) {
			w.o.Log(fmt.Sprintf("approval webhook: gave up on %s: it expires before the next attempt", r.ID), err)
			return
		}
		w.o.Log(fmt.Sprintf("approval webhook: attempt %d of %d for %s failed, next in %s", attempt, w.o.MaxAttempts, r.ID, wait), err)
		t := time.NewTimer(wait)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// post makes one attempt. Its errors never name the URL.
func (w *Webhook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(w.ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.o.URL, bytes.NewReader(body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("bad webhook URL: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the URL
		}
		return &retryable{err: err}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("webhook answered %s", resp.Status)
	// Slack says why in one word ("invalid_blocks"); anything longer might
	// echo the message, SQL included, which logs must not carry.
	if word := strings.TrimSpace(string(answer)); errorWord.MatchString(word) {
		err = fmt.Errorf("webhook answered %s: %s", resp.Status, word)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return &retryable{err: err, wait: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return err
}

// retryAfter parses a Retry-After header: seconds or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

// slackMessage is a Slack-compatible incoming-webhook message: text is the
// fallback (notifications, other chat systems), blocks the layout.
type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type   string       `json:"type"`
	Text   *slackText   `json:"text,omitempty"`
	Fields []*slackText `json:"fields,omitempty"`
}

type slackText struct {
	Type string `json:"type"` // plain_text | mrkdwn
	Text string `json:"text"`
}

func mrkdwn(s string) *slackText { return &slackText{Type: "mrkdwn", Text: s} }

// message says who asks (identity, uid, origin), what (the SQL, with
// password literals redacted, and the policy's reason), where (target,
// session), until when, and how to approve or deny.
func (w *Webhook) message(r Request) slackMessage {
	who := fmt.Sprintf("%s (uid %d", r.Identity, r.UID)
	if r.User != "" {
		who = fmt.Sprintf("%s (uid %d %s", r.Identity, r.UID, r.User)
	}
	if r.PID != 0 {
		who += fmt.Sprintf(", pid %d", r.PID)
	}
	who += ")"
	sql := RedactSQL(r.SQL)
	if len(sql) > maxSQLInMessage {
		sql = sql[:maxSQLInMessage] + "…"
	}
	approve := fmt.Sprintf(w.o.HowToApprove, r.ID)
	deny := fmt.Sprintf(w.o.HowToDeny, r.ID)
	until := r.Expires.UTC().Format(time.RFC3339)
	approvers := "anyone allowed on the control API"
	if len(r.Approvers) > 0 {
		approvers = strings.Join(r.Approvers, ", ")
	}

	text := fmt.Sprintf("tollgate: %s asks to run a statement on %s that needs approval (%s, until %s): %s",
		who, r.Target, r.ID, until, approve)
	whoText := "*Who*\n" + esc(who)
	if r.Origin != "" {
		whoText += "\n" + esc(r.Origin)
	}
	what := "*What*\n```" + strings.ReplaceAll(esc(sql), "```", "'''") + "```"
	if r.Reason != "" {
		what += "\n*Policy:* " + esc(r.Reason)
	}
	return slackMessage{
		Text: text,
		Blocks: []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: "Approval needed: " + r.ID}},
			{Type: "section", Fields: []*slackText{
				mrkdwn(whoText),
				mrkdwn(fmt.Sprintf("*Where*\ntarget %s\nsession %s", esc(r.Target), esc(r.Session))),
			}},
			{Type: "section", Text: mrkdwn(what)},
			{Type: "section", Fields: []*slackText{
				mrkdwn("*Approvers*\n" + esc(approvers)),
				mrkdwn(fmt.Sprintf("*Until*\n%s (scope %s)", until, r.Scope)),
			}},
			{Type: "section", Text: mrkdwn(fmt.Sprintf("*How*\n`%s`\n`%s`", esc(approve), esc(deny)))},
		},
	}
}

// esc escapes the characters Slack's mrkdwn reserves.
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

var errorWord = regexp.MustCompile(`^[A-Za-z_]{1,64}$`)

var passwordLiteral = regexp.MustCompile(`(?is)\b(password\s+)('(?:[^']|'')*'|\$([a-z_0-9]*)\$.*?\$[a-z_0-9]*\$)`)

// RedactSQL replaces the literal after PASSWORD (CREATE/ALTER ROLE ...
// PASSWORD '...') with '***': statement text that leaves the agent for a
// chat system must not carry a password.
func RedactSQL(sql string) string {
	return passwordLiteral.ReplaceAllString(sql, "${1}'***'")
}
