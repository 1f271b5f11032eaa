package pgtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shared is the cluster Shared hands databases out on, started by the first
// Shared call of a test binary whose TestMain runs Main.
var shared struct {
	active atomic.Bool // Main is running the tests
	mu     sync.Mutex
	srv    *Server
	err    error
	n      int // databases made, for names
}

// Main runs the tests of a package whose tests call Shared, then stops the
// shared cluster. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	shared.active.Store(true)
	code := m.Run()
	shared.active.Store(false)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.c.destroy()
		shared.srv = nil
	}
	return code
}

// Shared returns a Server for a new database of its own on the cluster the
// test binary shares; the database is dropped at the end of the test. The
// shared cluster must not be stopped or restarted: tests that do use Start.
// Without Main in TestMain, Shared is Start.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !shared.active.Load() {
		return Start(t)
	}
	bin := requireBinaries(t)
	shared.mu.Lock()
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = start(bin, options{})
		if shared.err != nil && shared.srv != nil {
			shared.srv.c.destroy()
		}
	}
	srv, err := shared.srv, shared.err
	shared.n++
	n := shared.n
	shared.mu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: shared cluster: %v", err)
	}

	db := fmt.Sprintf("tg_%s_%d", dbName(t.Name()), n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := srv.connectLocal(ctx, "postgres")
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, db, srv.App.Name)).ReadAll(); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := srv.connectLocal(ctx, "postgres")
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", db, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE %s WITH (FORCE)`, db)).ReadAll(); err != nil {
			t.Errorf("pgtest: drop database %s: %v", db, err)
		}
	})
	cp := *srv
	cp.Database = db
	return &cp
}

// dbName makes a test name usable in a database name.
func dbName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, s)
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}
