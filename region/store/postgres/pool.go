package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// idleCheckAfter is how long a connection may sit idle before acquire pings
// it instead of trusting it.
const idleCheckAfter = 30 * time.Second

// connPool is a small bounded pool of pgx connections.
//
// pgxpool would do, but it needs github.com/jackc/puddle/v2, which the
// module does not require; this pool keeps the backend within the module's
// existing dependencies. Connections are created on demand up to size,
// handed out LIFO, pinged after idleCheckAfter of idleness, and dropped
// when they come back broken or inside a transaction.
type connPool struct {
	cfg   *pgx.ConnConfig
	slots chan struct{} // one token per connection in use

	mu     sync.Mutex
	idle   []idleConn
	closed bool
}

type idleConn struct {
	conn  *pgx.Conn
	since time.Time
}

func newConnPool(cfg *pgx.ConnConfig, size int) *connPool {
	return &connPool{cfg: cfg, slots: make(chan struct{}, size)}
}

// acquire returns a connection for the caller's exclusive use; give it back
// with release.
func (p *connPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.slots
			return nil, errors.New("postgres: store closed")
		}
		var ic idleConn
		if n := len(p.idle); n > 0 {
			ic = p.idle[n-1]
			p.idle[n-1] = idleConn{}
			p.idle = p.idle[:n-1]
		}
		p.mu.Unlock()
		if ic.conn == nil {
			break
		}
		if time.Since(ic.since) < idleCheckAfter {
			return ic.conn, nil
		}
		if err := ic.conn.Ping(ctx); err == nil {
			return ic.conn, nil
		}
		closeConn(ic.conn)
		if ctx.Err() != nil {
			<-p.slots
			return nil, ctx.Err()
		}
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return c, nil
}

// release gives c back to the pool, or closes it when it is broken, busy,
// or still inside a transaction.
func (p *connPool) release(c *pgx.Conn) {
	defer func() { <-p.slots }()
	if c.IsClosed() || c.PgConn().IsBusy() || c.PgConn().TxStatus() != 'I' {
		closeConn(c)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeConn(c)
		return
	}
	p.idle = append(p.idle, idleConn{conn: c, since: time.Now()})
	p.mu.Unlock()
}

// close closes the idle connections; connections in use are closed when
// they are released.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.conn)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
