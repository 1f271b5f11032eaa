package postgres_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startFakeServer starts a scripted PostgreSQL for the relay fuzz target,
// which needs thousands of sessions a second: a real server cannot start
// that many. It returns a dialer whose every connection, whatever the
// address, is a new session of it. A session logs every user in (trust)
// and answers the extended and simple protocols as PostgreSQL does in
// outline (errors skip to Sync, COPY in and out, row limits, transaction
// status), with results the SQL text chooses: "fail" errs, "copy in" and
// "copy out" copy, "notice" warns first, "begin", "commit" and "rollback"
// move the transaction, "nodata" returns no rows; the number of columns is
// len(sql)%3+1. Sessions still open at the end of the test are closed.
func startFakeServer(t testing.TB) dialFunc {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return func(context.Context, string, string) (net.Conn, error) {
		c, s, err := socketPair()
		if err != nil {
			return nil, err
		}
		mu.Lock()
		conns[s] = true
		mu.Unlock()
		wg.Go(func() {
			(&fakeSession{be: pgproto3.NewBackend(s, s)}).serve()
			s.Close()
			mu.Lock()
			delete(conns, s)
			mu.Unlock()
		})
		return c, nil
	}
}

type fakeSession struct {
	be      *pgproto3.Backend
	tx      byte // 'I', 'T', 'E'
	skip    bool // after an error in the extended protocol, until Sync
	copying bool // COPY FROM STDIN of a Query
	stmts   map[string]string
	portals map[string]*fakePortal
}

type fakePortal struct {
	sql  string
	sent int // rows already sent
}

func (s *fakeSession) send(msgs ...pgproto3.BackendMessage) {
	for _, m := range msgs {
		s.be.Send(m)
	}
}

func (s *fakeSession) serve() {
	if _, err := s.be.ReceiveStartupMessage(); err != nil {
		return
	}
	s.tx = 'I'
	s.stmts, s.portals = map[string]string{}, map[string]*fakePortal{}
	s.send(&pgproto3.AuthenticationOk{},
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"},
		&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"},
		&pgproto3.ParameterStatus{Name: "DateStyle", Value: "ISO, MDY"},
		&pgproto3.ParameterStatus{Name: "integer_datetimes", Value: "on"},
		&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"},
		&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}},
		&pgproto3.ReadyForQuery{TxStatus: s.tx})
	if s.be.Flush() != nil {
		return
	}
	for {
		msg, err := s.be.Receive()
		if err != nil {
			return
		}
		if _, ok := msg.(*pgproto3.Terminate); ok {
			return
		}
		s.handle(msg)
		if s.be.Flush() != nil {
			return
		}
	}
}

func (s *fakeSession) fail(code, msg string) {
	s.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: code, Message: msg})
	if s.tx == 'T' {
		s.tx = 'E'
	}
}

func (s *fakeSession) ready() { s.send(&pgproto3.ReadyForQuery{TxStatus: s.tx}) }

func columns(sql string) *pgproto3.RowDescription {
	d := &pgproto3.RowDescription{}
	for i := range len(sql)%3 + 1 {
		d.Fields = append(d.Fields, pgproto3.FieldDescription{Name: []byte("c" + strconv.Itoa(i)), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	return d
}

func row(sql string, n int) *pgproto3.DataRow {
	r := &pgproto3.DataRow{}
	for i := range len(sql)%3 + 1 {
		r.Values = append(r.Values, []byte(fmt.Sprint("v", n, i)))
	}
	return r
}

// rowsOf is how many rows sql returns.
func rowsOf(sql string) int { return len(sql) % 4 }

func (s *fakeSession) handle(msg pgproto3.FrontendMessage) {
	if s.copying {
		switch m := msg.(type) {
		case *pgproto3.CopyData:
		case *pgproto3.CopyDone:
			s.copying = false
			s.send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")})
			s.ready()
		case *pgproto3.CopyFail:
			s.copying = false
			s.fail("57014", "COPY from stdin failed: "+m.Message)
			s.ready()
		case *pgproto3.Flush, *pgproto3.Sync: // ignored during COPY, as PostgreSQL does
		default:
			s.copying = false
			s.fail("08P01", fmt.Sprintf("unexpected message type %T during COPY from stdin", msg))
			s.ready()
		}
		return
	}
	if _, sync := msg.(*pgproto3.Sync); s.skip && !sync {
		return // after an error in the extended protocol, everything up to Sync
	}
	switch m := msg.(type) {
	case *pgproto3.Query:
		s.query(m.String)
	case *pgproto3.FunctionCall:
		s.send(&pgproto3.FunctionCallResponse{Result: []byte("42")})
		s.ready()
	case *pgproto3.Sync:
		s.skip = false
		if s.tx == 'I' {
			clear(s.portals)
		}
		s.ready()
	case *pgproto3.Flush, *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
		// Copy messages outside COPY are ignored, as PostgreSQL does.
	default:
		s.extended(msg)
	}
}

func (s *fakeSession) query(sql string) {
	delete(s.stmts, "")
	delete(s.portals, "")
	switch {
	case strings.TrimSpace(sql) == "":
		s.send(&pgproto3.EmptyQueryResponse{})
	case strings.HasPrefix(sql, "tollgate_denied_"):
		s.fail("42601", "syntax error")
	case s.tx == 'E' && !strings.Contains(sql, "rollback") && !strings.Contains(sql, "commit"):
		s.fail("25P02", "current transaction is aborted")
	case strings.Contains(sql, "fail"):
		s.fail("22012", "division by zero")
	case strings.Contains(sql, "copy in"):
		s.copying = true
		s.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}})
		return // ReadyForQuery at the end of the COPY
	case strings.Contains(sql, "copy out"):
		s.send(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}},
			&pgproto3.CopyData{Data: []byte("a\n")}, &pgproto3.CopyData{Data: []byte("b\n")},
			&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 2")})
	default:
		if strings.Contains(sql, "notice") {
			s.send(&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "notice"})
		}
		s.results(sql)
	}
	s.ready()
}

func (s *fakeSession) results(sql string) {
	switch {
	case strings.Contains(sql, "begin"):
		s.tx = 'T'
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")})
	case strings.Contains(sql, "commit"), strings.Contains(sql, "rollback"):
		tag := "COMMIT"
		if s.tx == 'E' || strings.Contains(sql, "rollback") {
			tag = "ROLLBACK"
		}
		s.tx = 'I'
		s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
	case strings.Contains(sql, "nodata"):
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
	default:
		s.send(columns(sql))
		for i := range rowsOf(sql) {
			s.send(row(sql, i))
		}
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(rowsOf(sql)))})
	}
}

// extended answers Parse, Bind, Describe, Execute and Close; an error skips
// the rest up to Sync.
func (s *fakeSession) extended(msg pgproto3.FrontendMessage) {
	if s.tx == 'E' {
		s.fail("25P02", "current transaction is aborted")
		s.skip = true
		return
	}
	switch m := msg.(type) {
	case *pgproto3.Parse:
		if _, dup := s.stmts[m.Name]; dup && m.Name != "" {
			s.fail("42P05", "prepared statement already exists")
			s.skip = true
			return
		}
		if strings.HasPrefix(m.Query, "tollgate_denied_") || strings.Contains(m.Query, "copy") {
			s.fail("42601", "syntax error")
			s.skip = true
			return
		}
		s.stmts[m.Name] = m.Query
		s.send(&pgproto3.ParseComplete{})
	case *pgproto3.Bind:
		sql, ok := s.stmts[m.PreparedStatement]
		if _, dup := s.portals[m.DestinationPortal]; !ok || dup && m.DestinationPortal != "" {
			s.fail("26000", "no such statement, or portal exists")
			s.skip = true
			return
		}
		s.portals[m.DestinationPortal] = &fakePortal{sql: sql}
		s.send(&pgproto3.BindComplete{})
	case *pgproto3.Describe:
		var sql string
		var ok bool
		if m.ObjectType == 'S' {
			sql, ok = s.stmts[m.Name]
		} else if p := s.portals[m.Name]; p != nil {
			sql, ok = p.sql, true
		}
		if !ok {
			s.fail("26000", "no such object")
			s.skip = true
			return
		}
		if m.ObjectType == 'S' {
			s.send(&pgproto3.ParameterDescription{})
		}
		if strings.Contains(sql, "nodata") || strings.Contains(sql, "begin") || strings.Contains(sql, "commit") || strings.Contains(sql, "rollback") {
			s.send(&pgproto3.NoData{})
		} else {
			s.send(columns(sql))
		}
	case *pgproto3.Execute:
		p := s.portals[m.Portal]
		switch {
		case p == nil:
			s.fail("34000", "no such portal")
			s.skip = true
		case strings.Contains(p.sql, "fail"):
			s.fail("22012", "division by zero")
			s.skip = true
		case p.sql == "":
			s.send(&pgproto3.EmptyQueryResponse{})
		case strings.Contains(p.sql, "nodata") || strings.Contains(p.sql, "begin") || strings.Contains(p.sql, "commit") || strings.Contains(p.sql, "rollback"):
			s.results(p.sql)
		default:
			n := rowsOf(p.sql) - p.sent
			if m.MaxRows > 0 && uint32(n) > m.MaxRows {
				for i := range int(m.MaxRows) {
					s.send(row(p.sql, p.sent+i))
				}
				p.sent += int(m.MaxRows)
				s.send(&pgproto3.PortalSuspended{})
				return
			}
			for i := range n {
				s.send(row(p.sql, p.sent+i))
			}
			p.sent += n
			s.send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(n))})
		}
	case *pgproto3.Close:
		if m.ObjectType == 'S' {
			delete(s.stmts, m.Name)
		} else {
			delete(s.portals, m.Name)
		}
		s.send(&pgproto3.CloseComplete{})
	}
}
