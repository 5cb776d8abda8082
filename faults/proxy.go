package faults

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is an in-process TCP proxy between a client (a router) and one
// upstream address, for link faults: added latency, a cut (new connections
// are refused and open ones closed) and a reset (open connections are
// aborted with RST). It listens on a loopback address only.
type Proxy struct {
	ln      net.Listener
	target  string
	latency atomic.Int64 // nanoseconds added before each forwarded chunk
	cut     atomic.Bool
	accepts atomic.Int64

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewProxy listens on listen (a loopback host:port, port 0 for any) and
// forwards every accepted connection to target.
func NewProxy(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted counts the connections the proxy accepted (cut ones included).
func (p *Proxy) Accepted() int64 { return p.accepts.Load() }

// SetLatency delays every chunk forwarded in either direction by d.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Cut partitions the link: open connections are closed and new ones are
// accepted and immediately closed, until Heal.
func (p *Proxy) Cut() {
	p.cut.Store(true)
	p.closeAll(false)
}

// Reset aborts every open connection with a TCP RST.
func (p *Proxy) Reset() { p.closeAll(true) }

// Heal ends a cut and removes the latency.
func (p *Proxy) Heal() {
	p.cut.Store(false)
	p.latency.Store(0)
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeAll(false)
	p.wg.Wait()
	return err
}

func (p *Proxy) closeAll(rst bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// track adds (or removes) a connection to the set Cut, Reset and Close
// close. Once the proxy is closed it refuses to add and closes c instead, so
// a connection accepted during Close cannot outlive it.
func (p *Proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.conns, c)
		return true
	}
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepts.Add(1)
		if p.cut.Load() {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	if !p.track(c, true) {
		return
	}
	defer p.track(c, false)
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(up, true) {
		_ = c.Close()
		return
	}
	defer p.track(up, false)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}

// pipe copies src to dst, sleeping the configured latency before each chunk.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.latency.Load()); d > 0 {
				time.Sleep(d)
			}
			if p.cut.Load() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection ends this direction
		}
	}
}

// Open counts the connections currently open through the proxy (client
// sides and upstream sides).
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
