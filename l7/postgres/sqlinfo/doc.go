// Package sqlinfo turns SQL text into the facts a policy judges a statement
// by (the policy input's "request" object), using PostgreSQL's own parser
// (libpg_query through pg_query_go).
//
//	sql ──► caps (bytes, nesting; cheap lexical scan) ──► libpg_query parse
//	    ──► one Statement per statement: its text, fingerprint, command tags,
//	        tables with their access kind, functions called, read-only verdict
//
// # Why the caps come first
//
// libpg_query walks the parse tree recursively in C (to hand it to Go and to
// fingerprint it), at about 176 bytes of stack per level of the tree. A tree
// deep enough overflows the calling thread's stack and kills the whole
// process: a signal inside cgo cannot be recovered. Measured with glibc's
// usual 8 MiB thread stacks, a chain of 47,600 UNIONs (one level each) or of
// 23,800 operators ("SELECT 1+1+...", two levels each) crashes; on 2 MiB,
// 1,970 nested sub-selects (six levels each) do. Brackets nested some 10,000
// deep are refused by the grammar's own stack before any of that, but chains
// have no brackets at all.
//
// So before parsing, a lexical scan that knows PostgreSQL's strings, quoted
// identifiers, dollar quotes and comments estimates the depth: every open
// bracket or CASE counts one, and so does every operator, ::, keyword
// operator (NOT, IS, BETWEEN, LIKE, IN, AT, COLLATE ...), JOIN and set
// operation, except that a comma, AND, OR, WHEN, THEN or ELSE ends a chain of
// operators (their operands are siblings in the tree, not nested). Text over
// Limits.MaxDepth is refused with ErrTooDeep. The tree's depth stays within
// 8 levels per unit of the estimate plus 32 (tested, and checked by the fuzz
// target), so DefaultMaxDepth (1000) bounds it to about 8,000 levels, 1.4 MiB
// of stack: safe on 8 MiB and 2 MiB stacks (tested), and below the 10,000
// levels Go's protobuf decoder accepts. Programs linked against musl, whose
// threads get 128 KiB stacks, need a far smaller MaxDepth (50 or so;
// untested).
//
// # Access kinds
//
// Table.Access is one of:
//
//	select      rows are read: FROM, JOIN, sub-queries, views, UPDATE ... FROM,
//	            DELETE ... USING, INSERT ... SELECT sources, MERGE sources,
//	            COPY (query) TO
//	insert      rows are added: INSERT target, MERGE ... THEN INSERT
//	update      rows are changed: UPDATE target, INSERT ... ON CONFLICT DO
//	            UPDATE target (with insert), MERGE ... THEN UPDATE
//	delete      rows are removed: DELETE target, MERGE ... THEN DELETE
//	truncate    TRUNCATE
//	lock        LOCK TABLE, and SELECT ... FOR UPDATE / NO KEY UPDATE / SHARE /
//	            KEY SHARE: in addition to select, for the tables read in that
//	            query's FROM clause (sub-queries there included), or those its
//	            OF list names
//	copy_from   COPY t FROM: rows are written into t
//	copy_to     COPY t TO: every row of t is read
//	ddl         the relation a DDL or DCL statement creates, alters, drops,
//	            renames, comments on, grants on, indexes or attaches a trigger,
//	            rule or policy to; the target of SELECT INTO and CREATE TABLE AS
//	maintenance VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH MATERIALIZED VIEW
//	reference   named without its rows being read or written now: a FOREIGN
//	            KEY's referenced table, CREATE TABLE ... (LIKE t), and every
//	            table inside a definition that runs later (CREATE VIEW, CREATE
//	            RULE, CREATE FUNCTION ... BEGIN ATOMIC, CREATE POLICY, trigger
//	            WHEN, CREATE MATERIALIZED VIEW / TABLE AS ... WITH NO DATA)
//
// A table appears once per access kind. Table.Schema is "" when the statement
// does not qualify the name: PostgreSQL's search_path decides, and a policy
// may treat "" as "public". A database qualifier (db.schema.table) is
// dropped: PostgreSQL refuses one that names another database. Names of common table expressions are not tables;
// the tables inside them are, with their own access kinds (a data-modifying
// WITH d AS (DELETE FROM t RETURNING *) SELECT ... yields t with delete).
//
// # Read-only
//
// Statement.ReadOnly is a syntactic judgement that is true only when the
// statement cannot change data: SELECT, VALUES and TABLE without SELECT INTO,
// without FOR UPDATE/SHARE and without a data-modifying WITH; SHOW; EXPLAIN
// (and EXPLAIN ANALYZE only of a read-only statement); COPY ... TO STDOUT of
// a table or read-only query; DECLARE CURSOR and PREPARE of a read-only query;
// FETCH, MOVE, CLOSE, DEALLOCATE (a cursor can only hold a SELECT or VALUES
// that was judged at DECLARE); and transaction control (BEGIN, START
// TRANSACTION, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO; not
// PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED). Everything else is
// false, including SET, EXECUTE (the prepared statement is not visible here),
// DO, CALL, LISTEN and NOTIFY.
//
// Functions decide too, conservatively: a statement that calls any function
// outside a small allowlist of common built-in functions that write nothing
// (aggregates such as count and sum; string, number, date, array and JSON
// helpers such as lower and now; the catalog helpers psql's \d uses; see
// pureFunctions) is not read-only. So
// nextval, setval, set_config, pg_advisory_lock, lo_*, dblink*,
// pg_terminate_backend, pg_cancel_backend, pg_reload_conf, pg_read_file,
// pg_sleep and every user-defined or schema-qualified function (other than
// pg_catalog.*) make it false. A name in the allowlist is trusted when
// unqualified, though a function of that name earlier in search_path than
// pg_catalog would shadow it. What the parser cannot see is not judged:
// functions called by views, by user-defined operators or casts, or by
// triggers. For a hard guarantee, pair the policy with a read-only role or
// default_transaction_read_only on the server.
//
// # Command tags
//
// Statement.Commands[0] is the command tag PostgreSQL gives the statement
// (CreateCommandTag), as psql shows it: "SELECT", "INSERT", "CREATE TABLE",
// "TRUNCATE TABLE", "LOCK TABLE", "DECLARE CURSOR", "CLOSE CURSOR" ... (Only
// SELECT INTO, CREATE TABLE AS and CREATE MATERIALIZED VIEW complete with
// "SELECT n" on the wire; their tags here are "SELECT INTO", "CREATE TABLE AS"
// and "CREATE MATERIALIZED VIEW", so that a policy allowing SELECT does not
// allow them.) Further entries are the tags
// of statements it carries that run or are planned with it: the query of
// EXPLAIN, COPY, CREATE TABLE AS, PREPARE and DECLARE CURSOR, and each
// data-modifying WITH query. So EXPLAIN ANALYZE DELETE ... gives
// ["EXPLAIN", "DELETE"] and WITH d AS (DELETE ...) SELECT ... gives
// ["SELECT", "DELETE"].
//
// # Functions
//
// Statement.Functions lists every function call the parser sees (in select
// lists, WHERE, FROM as table functions, CALL, defaults and constraints of
// DDL), lower-cased, schema-qualified when the statement qualifies it
// ("pg_catalog.set_config"). Functions that SQL syntax calls implicitly are
// named as the syntax reads (EXTRACT gives "extract", SUBSTRING ... FROM
// gives "substring", AT TIME ZONE gives "timezone"). COALESCE, GREATEST,
// LEAST, NULLIF and CASE are expressions, not function calls; a trigger's
// function is not called by CREATE TRIGGER. DO blocks and function bodies
// given as strings are opaque.
//
// # Caches
//
// An Analyzer keeps two caches. One is keyed by the exact text. The other is
// keyed by the text with every constant literal (numbers, '...', E'...',
// $$...$$, B'...', X'...', U&'...') and comment replaced by a placeholder of
// its kind, and holds the facts of a statement analyzed before: a text that
// differs from it only in constants and comments, such as pgbench -S's
// "SELECT abalance FROM pgbench_accounts WHERE aid = 81234;" with another aid
// each time, is answered without being parsed. The result is exactly what
// Analyze returns (SQL is cut from the new text), because such texts parse
// to the same tree but for the values of constants, which no fact depends on
// (fingerprints ignore them by design). Texts the placeholder scan is not
// sure PostgreSQL's scanner reads alike, texts of more than one statement,
// and statements in which a literal is not just a constant's value (COPY ...
// TO 'file', EXPLAIN (ANALYZE 'off'), float(53), FETCH 5, a function body,
// a negative number) are left to the cache of exact texts; literal.go has
// the details.
//
// # Assumptions
//
// The text is UTF-8 (ErrEncoding otherwise): the engine converts from another
// client_encoding first. libpg_query parses with standard_conforming_strings
// on, as PostgreSQL does by default; a server or session with it off reads
// backslashes in '...' differently, and the statements judged here could
// differ from those run, so the engine must not let a session turn it off.
package sqlinfo
