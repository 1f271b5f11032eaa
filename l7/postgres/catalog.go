package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
)

// The catalog is how masking learns what a result column is: RowDescription
// names a column by its table's OID and its attribute number only, so an
// alias (SELECT email AS e) cannot hide it. A side connection per database,
// logged in with the target's credentials as the sessions are, reads
// pg_class and pg_attribute and describes statements without running them.
// What it reads is cached until DDL is seen or catalogTTL passes.

// catalogTTL bounds how long the catalog trusts what it read: DDL run by
// clients the agent does not see (other hosts) is noticed within it.
const catalogTTL = time.Minute

// catalogTimeout bounds one catalog query.
const catalogTimeout = 5 * time.Second

// catalogIdle is how long an unused side connection stays open.
const catalogIdle = 2 * time.Minute

// maxDescribed bounds each of the catalog's caches per database.
const maxDescribed = 4096

// relation is one pg_class row, with its columns.
type relation struct {
	schema, name string
	kind         byte             // relkind: 'r' table, 'p' partitioned, 'v' view, 'm' matview, 'f' foreign, ...
	columns      map[int16]string // attnum → attname
}

// tableLike reports relations whose columns hold stored values: a column
// rule applies to them directly.
func (r *relation) tableLike() bool {
	switch r.kind {
	case 'r', 'p', 'f', 'm':
		return true
	}
	return false
}

// catalog reads one database's catalog through a side connection.
type catalog struct {
	e              *engine
	database, user string

	connMu sync.Mutex // serializes the side connection
	conn   *pgconn.PgConn
	idle   *time.Timer // closes conn when unused for catalogIdle

	mu        sync.Mutex
	loaded    time.Time
	rels      map[uint32]*relation
	names     map[string]uint32 // quoted qualified name → OID
	described map[string][]pgconn.FieldDescription
	plans     map[string]cachedPlan // masking's checks of requests
}

type cachedPlan struct {
	plan   *maskPlan
	reason string
}

// catalogs holds an engine's catalogs by database and user.
type catalogs struct {
	mu sync.Mutex
	m  map[string]*catalog
}

func (cs *catalogs) get(e *engine, database, user string) *catalog {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	key := database + "\x00" + user
	c := cs.m[key]
	if c == nil {
		if cs.m == nil {
			cs.m = map[string]*catalog{}
		}
		c = &catalog{e: e, database: database, user: user}
		cs.m[key] = c
	}
	return c
}

// invalidate forgets what every catalog read (DDL was seen).
func (cs *catalogs) invalidate() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.m {
		c.invalidate()
	}
}

func (c *catalog) invalidate() {
	c.mu.Lock()
	c.rels, c.names, c.described, c.plans = nil, nil, nil, nil
	c.mu.Unlock()
}

// fresh drops the cache when it is older than catalogTTL. Called with mu.
func (c *catalog) fresh() {
	if time.Since(c.loaded) > catalogTTL {
		c.rels, c.names, c.described, c.plans = nil, nil, nil, nil
	}
	if c.rels == nil {
		c.rels = map[uint32]*relation{}
		c.names = map[string]uint32{}
		c.plans = map[string]cachedPlan{}
		c.described = map[string][]pgconn.FieldDescription{}
		c.loaded = time.Now()
	}
}

// errNoCatalog: the target relays the client's own login (passthrough), so
// the agent has no credentials to read the catalog with.
var errNoCatalog = errors.New("the agent cannot read this target's catalog: its credentials are the client's own (passthrough)")

// with runs fn on the side connection, connecting first when needed. A
// connection that fails is dropped; the next call connects again.
func (c *catalog) with(ctx context.Context, fn func(ctx context.Context, conn *pgconn.PgConn) error) error {
	if c.e.target.Credentials.Passthrough {
		return errNoCatalog
	}
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		cfg, err := c.e.upstreamConfig(c.database, c.user)
		if err != nil {
			return err
		}
		cfg.RuntimeParams["application_name"] = "tollgate-catalog"
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("catalog connection: %w", err)
		}
		c.conn = conn
	}
	err := fn(ctx, c.conn)
	var pe *pgconn.PgError
	if err != nil && !errors.As(err, &pe) { // a broken connection, not a statement's error
		c.conn.Close(context.Background())
		c.conn = nil
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(catalogIdle, c.closeIdle)
	} else {
		c.idle.Reset(catalogIdle)
	}
	return err
}

// closeIdle closes the side connection (an engine replaced by a reload
// leaves its catalogs unused).
func (c *catalog) closeIdle() {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.conn != nil {
		c.conn.Close(context.Background())
		c.conn = nil
	}
}

// relation returns the relation with this OID (nil when it does not exist).
func (c *catalog) relation(ctx context.Context, oid uint32) (*relation, error) {
	rel, err := cachedLoad(c, func(c *catalog) map[uint32]*relation { return c.rels }, oid, func() (*relation, error) {
		var rel *relation
		err := c.with(ctx, func(ctx context.Context, conn *pgconn.PgConn) error {
			id := strconv.FormatUint(uint64(oid), 10)
			rows, err := query(ctx, conn, `SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid`, id)
			if err != nil || len(rows) == 0 {
				return err
			}
			row := rows[0]
			rel = &relation{schema: string(row[0]), name: string(row[1]), columns: map[int16]string{}}
			if len(row[2]) > 0 {
				rel.kind = row[2][0]
			}
			rows, err = query(ctx, conn, `SELECT attnum, attname FROM pg_catalog.pg_attribute
			WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped`, id)
			if err != nil {
				return err
			}
			for _, row := range rows {
				n, err := strconv.ParseInt(string(row[0]), 10, 16)
				if err != nil {
					return fmt.Errorf("attnum %q: %w", row[0], err)
				}
				rel.columns[int16(n)] = string(row[1])
			}
			return nil
		})
		return rel, err
	})
	if err != nil {
		return nil, fmt.Errorf("read relation %d: %w", oid, err)
	}
	return rel, nil
}

// cachedLoad returns what the cache pick chooses holds for key, else what
// load returns, kept unless the cache was dropped meanwhile (DDL, or the
// TTL: what was read may be stale). A full cache is emptied first.
func cachedLoad[K comparable, V any](c *catalog, pick func(*catalog) map[K]V, key K, load func() (V, error)) (V, error) {
	c.mu.Lock()
	c.fresh()
	v, ok := pick(c)[key]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if m := pick(c); m != nil {
		if len(m) >= maxDescribed {
			clear(m)
		}
		m[key] = v
	}
	c.mu.Unlock()
	return v, nil
}

// view returns the result columns of a view's query and what its
// definition outputs: column k of the view is field k-1.
func (c *catalog) view(ctx context.Context, oid uint32) ([]pgconn.FieldDescription, sqlinfo.Output, error) {
	var def string
	err := c.with(ctx, func(ctx context.Context, conn *pgconn.PgConn) error {
		rows, err := query(ctx, conn, `SELECT pg_catalog.pg_get_viewdef($1::oid)`, strconv.FormatUint(uint64(oid), 10))
		if err == nil && len(rows) == 1 {
			def = strings.TrimSuffix(strings.TrimSpace(string(rows[0][0])), ";")
		}
		return err
	})
	if err != nil {
		return nil, sqlinfo.Output{}, fmt.Errorf("read view %d: %w", oid, err)
	}
	out, err := sqlinfo.AnalyzeOutput(def)
	if err != nil {
		return nil, sqlinfo.Output{}, fmt.Errorf("view %d: %w", oid, err)
	}
	fields, err := c.describe(ctx, def, def)
	if err != nil {
		return nil, sqlinfo.Output{}, fmt.Errorf("describe view %d: %w", oid, err)
	}
	return fields, out, nil
}

// oidByName resolves a relation name as the side connection's search_path
// does (0: no such relation).
func (c *catalog) oidByName(ctx context.Context, schema, name string) (uint32, error) {
	qualified := pgIdent(name)
	if schema != "" {
		qualified = pgIdent(schema) + "." + qualified
	}
	oid, err := cachedLoad(c, func(c *catalog) map[string]uint32 { return c.names }, qualified, func() (uint32, error) {
		var oid uint32
		err := c.with(ctx, func(ctx context.Context, conn *pgconn.PgConn) error {
			rows, err := query(ctx, conn, `SELECT coalesce(pg_catalog.to_regclass($1)::oid, 0)`, qualified)
			if err != nil {
				return err
			}
			if len(rows) == 1 {
				n, err := strconv.ParseUint(string(rows[0][0]), 10, 32)
				if err != nil {
					return err
				}
				oid = uint32(n)
			}
			return nil
		})
		return oid, err
	})
	if err != nil {
		return 0, fmt.Errorf("resolve %s: %w", qualified, err)
	}
	return oid, nil
}

// plan returns masking's check of a request, if kept.
func (c *catalog) plan(key string) (*maskPlan, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fresh()
	p, ok := c.plans[key]
	return p.plan, p.reason, ok
}

// keepPlan keeps masking's check of a request until the catalog is read
// again.
func (c *catalog) keepPlan(key string, p *maskPlan, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plans != nil {
		if len(c.plans) >= maxDescribed {
			clear(c.plans)
		}
		c.plans[key] = cachedPlan{p, reason}
	}
}

// query runs sql with text arguments and returns its rows in text format.
func query(ctx context.Context, conn *pgconn.PgConn, sql string, args ...string) ([][][]byte, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := conn.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	return res.Rows, res.Err
}

// pgIdent quotes an identifier.
func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// describe returns the result columns sql would have, without running it
// (nil: it returns no rows), cached under key.
func (c *catalog) describe(ctx context.Context, key, sql string) ([]pgconn.FieldDescription, error) {
	return cachedLoad(c, func(c *catalog) map[string][]pgconn.FieldDescription { return c.described }, key, func() ([]pgconn.FieldDescription, error) {
		var fields []pgconn.FieldDescription
		err := c.with(ctx, func(ctx context.Context, conn *pgconn.PgConn) error {
			sd, err := conn.Prepare(ctx, "", sql, nil)
			if err != nil {
				return err
			}
			fields = make([]pgconn.FieldDescription, len(sd.Fields))
			copy(fields, sd.Fields)
			return nil
		})
		return fields, err
	})
}
