package l7

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/redirect"
)

// Session is one redirected client connection and what is known about it.
type Session struct {
	ID       string
	Target   *config.Target
	Origin   redirect.Origin
	Workload identity.Workload
	Start    time.Time
	Log      *zap.Logger

	// BytesIn counts bytes from the client to the upstream; BytesOut the
	// bytes from the upstream to the client.
	BytesIn, BytesOut atomic.Int64

	end atomic.Pointer[time.Time]
}

// End reports when the session ended, or the zero time while it is live.
func (s *Session) End() time.Time {
	if t := s.end.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// Finish records the session's end time once.
func (s *Session) Finish(t time.Time) { s.end.CompareAndSwap(nil, &t) }
