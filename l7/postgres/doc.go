// Package postgres is the PostgreSQL engine: it speaks the wire protocol to
// the client, logs in to the upstream with the target's credentials, and
// relays messages, asking a Decider before each statement goes upstream.
//
// A session, with C the client, P the proxy and U the upstream:
//
//	C ──SSLRequest──────► P                   answered 'N' (no client TLS), or 'S' and a
//	C ◄──'N'───────────── P                   TLS handshake; bytes sent before the answer
//	                                          are refused (CVE-2021-3935)
//	C ──StartupMessage──► P                   user, database, application_name, options;
//	                                          replication refused; Decider(connect)
//	                      P ══pgconn login═══► U   target's username and password,
//	                      P ◄═ParameterStatus═ U   SCRAM/md5, TLS per target; then hijacked
//	C ◄──AuthenticationOk P                   no password asked: the kernel named the client
//	C ◄──ParameterStatus* P                   the upstream's, replayed
//	C ◄──BackendKeyData── P                   minted by the proxy, mapped to the upstream's
//	C ◄──ReadyForQuery─── P
//
//	C ──Query/Parse─────► P ──Decider──► allow: ──────────────► U
//	                                     deny:  tollgate_denied_<random> ► U  (a syntax error)
//	C ◄──ErrorResponse 42501 (the denial) ◄── P ◄── ErrorResponse 42601 ── U
//	C ◄──ReadyForQuery(status) ◄──────────────── P ◄── ReadyForQuery ───── U
//
//	C ──CancelRequest(minted key), on a new connection──► P ──CancelRequest(upstream key)──► U
//	C ──Terminate───────► P ──Terminate──► U   both closed
//
// pgconn logs in with the target's password only to a server that asks for
// it by SCRAM-SHA-256 or md5 (require_auth): a server that asks for it in
// clear text, or lets the login in without asking (trust), is refused with
// FATAL 28000 before the password leaves (ErrAuthDowngrade).
//
// # Passthrough
//
// With "credentials: passthrough" the client logs in with its own
// credentials, relayed:
//
//	C ──StartupMessage──► P ──StartupMessage (as sent, 3.0)──► U   after Decider(connect); TLS per target
//	C ◄──AuthenticationSASL (less -PLUS)── P ◄──AuthenticationSASL── U
//	C ──SASLInitialResponse─────────────► P ─────────────────────► U   unchanged, as every message
//	C ◄──SASLContinue / ──► SASLResponse ◄► P ◄────────────────────► U   (md5, cleartext alike)
//	C ◄──SASLFinal, AuthenticationOk──── P ◄──────────────────────── U   or the server's ErrorResponse
//	C ◄──ParameterStatus*, BackendKeyData (minted), ReadyForQuery── P ◄── U
//
// SCRAM channel binding cannot pass: the client's TLS channel ends at the
// proxy. SCRAM-SHA-256-PLUS is struck from the mechanisms offered; libpq
// and pgx in plain text to the proxy then use SCRAM-SHA-256. A client over
// TLS to the proxy that would bind its channel (channel_binding=prefer
// sends the gs2 flag 'y', which a TLS server takes for a downgrade attack)
// is refused with a hint to connect with channel_binding=disable.
//
// # Denials
//
// A denied statement is never sent; in its place the proxy sends a statement
// that fails to parse. The server then does what it does for any error: it
// answers ErrorResponse (swapped for the 42501 denial on the way back); in a
// transaction block the transaction is failed, so whatever the transaction
// wrote before the denial can no longer commit (COMMIT answers ROLLBACK); in
// the extended protocol it skips the client's messages up to the client's
// own Sync and answers ReadyForQuery with the true transaction status. The
// proxy never injects a Sync, never answers on the server's behalf, and
// client and server always agree on the transaction's state.
//
// # Remembered state
//
// The server loop keeps the RowDescription of each prepared statement (from
// Describe) and the result format codes of each portal (from Bind): pgx 5.9
// and later execute cached statements with no RowDescription on the wire, and
// a RowHook still needs to know what each column is.
//
// # Idle sessions
//
// WithIdleTimeout ends a session whose client sent nothing for the timeout
// while no request of its was outstanding: FATAL 57P05 (25P03 inside a
// transaction block), as PostgreSQL's own idle timeouts do, and Terminate
// to the upstream.
//
// # Buffering
//
// Each direction reads whole messages and writes them into a buffer that is
// flushed when the direction must wait for more input (or the buffer is
// large): messages that arrive together leave in one write, and no message
// waits behind an idle reader. Results stream; nothing holds a whole result.
//
// # Event loops
//
// A session over plain TCP starts on an event loop (eventloop.go): one
// goroutine per loop waits for the sockets of all its sessions (epoll),
// reads each ready socket once, and runs both directions' code for the whole
// messages read, without a goroutine hand-off per message. A session moves
// to a goroutine per direction, for good, when it would wait: a write the
// socket does not take (a slow client, a large result or COPY), a decision
// that may wait (an approval, masking's catalog reads), or its end. Sessions
// over TLS, with an idle timeout, a strict journal or Deciders and RowHooks
// the engine cannot vouch for run on goroutines from the start.
// TOLLGATE_EVENT_LOOPS sets how many loops run (0: none; default one per
// CPU the runtime uses, GOMAXPROCS).
package postgres
