package geodns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// TCP limits. A connection may carry many queries (RFC 7766 pipelining);
// it is closed after tcpIdleTimeout without a complete query.
const (
	tcpIdleTimeout  = 10 * time.Second
	tcpWriteTimeout = 5 * time.Second
	maxTCPConns     = 1024
)

// Server is the authoritative GeoDNS server: a [Zone] answering over UDP and
// TCP, a health [Checker] feeding it, per-subnet response-rate limiting on
// UDP, and OpenTelemetry metrics.
//
// Metrics (instrument names, attributes):
//   - geodns.queries: replies sent, by rcode and region (the region the
//     answer steered to, "none" for names not bound to a region) and
//     transport (udp, tcp).
//   - geodns.ratelimited: UDP replies withheld by the rate limiter, by
//     action (drop, slip).
//   - geodns.upstream.up, geodns.upstream.transitions,
//     geodns.upstream.checks: see [Checker].
type Server struct {
	zone    *Zone
	health  *Checker
	limiter *rateLimiter
	log     *slog.Logger

	// queries counts replies per attribute cell, [tcp][rcode*(regions+1)
	// +region+1] flattened; an observable counter reports the cells at
	// collection, so counting a reply is one atomic add (a synchronous
	// OpenTelemetry counter cost ~3 % of the server's CPU under load).
	queries      []atomic.Int64
	queryAttrs   []metric.ObserveOption
	queryCounter metric.Registration
	limited      metric.Int64Counter
	rcodeIndex   map[int]int
	nRegionCols  int
	slipAttrs    []metric.AddOption
	dropAttrs    []metric.AddOption

	tcpBufs sync.Pool // *tcpBuf

	udpBatching bool // recvmmsg/sendmmsg on *net.UDPConn; tests turn it off
}

// udpWorkers is the least number of UDP sockets (one reader each) Serve
// answers on when the socket it is given allows more (see udpSiblings); it
// uses one per processor on larger machines.
const udpWorkers = 2

// rcodes with their own metric attribute; others count as "other".
var metricRcodes = []int{
	dns.RcodeSuccess, dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNameError,
	dns.RcodeNotImplemented, dns.RcodeRefused, dns.RcodeBadVers,
}

// New validates cfg and builds a server. log and meter may be nil (discard,
// no-op).
func New(cfg Config, log *slog.Logger, meter metric.Meter) (*Server, error) {
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("geodns")
	}
	zone, err := NewZone(cfg)
	if err != nil {
		return nil, err
	}
	health, err := NewChecker(cfg, log, meter)
	if err != nil {
		return nil, err
	}
	s := &Server{
		zone:    zone,
		health:  health,
		limiter: newRateLimiter(cfg.RateLimit, nil),
		log:     log,

		udpBatching: true,
	}
	s.tcpBufs.New = func() any { return new(tcpBuf) }
	queries, err := meter.Int64ObservableCounter("geodns.queries",
		metric.WithDescription("DNS replies sent, by rcode, answer region and transport."),
		metric.WithUnit("{query}"))
	if err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if s.limited, err = meter.Int64Counter("geodns.ratelimited",
		metric.WithDescription("UDP replies withheld by response-rate limiting, by action."),
		metric.WithUnit("{query}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	// Attribute sets are built once so counting a query does not allocate.
	s.rcodeIndex = map[int]int{}
	rcodeNames := make([]string, 0, len(metricRcodes)+1)
	for i, rc := range metricRcodes {
		s.rcodeIndex[rc] = i
		rcodeNames = append(rcodeNames, dns.RcodeToString[rc])
	}
	rcodeNames = append(rcodeNames, "OTHER")
	regionNames := []string{"none"}
	for _, r := range zone.regions {
		regionNames = append(regionNames, r.id)
	}
	s.nRegionCols = len(regionNames)
	for _, transport := range []string{"udp", "tcp"} {
		for _, rc := range rcodeNames {
			for _, reg := range regionNames {
				set := attribute.NewSet(attribute.String("rcode", rc), attribute.String("region", reg),
					attribute.String("transport", transport))
				s.queryAttrs = append(s.queryAttrs, metric.WithAttributeSet(set))
			}
		}
	}
	s.queries = make([]atomic.Int64, len(s.queryAttrs))
	if s.queryCounter, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i := range s.queries {
			// A cell never counted is not reported (no series of zeros).
			if n := s.queries[i].Load(); n > 0 {
				o.ObserveInt64(queries, n, s.queryAttrs[i])
			}
		}
		return nil
	}, queries); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	s.slipAttrs = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("action", "slip")))}
	s.dropAttrs = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("action", "drop")))}
	return s, nil
}

// Zone returns the compiled zone the server answers from.
func (s *Server) Zone() *Zone { return s.zone }

// Health returns the server's health checker, e.g. to call CheckOnce or to
// read a Snapshot.
func (s *Server) Health() *Checker { return s.health }

// Listen opens a UDP socket and a TCP listener on the same address. With
// port 0 both get the same kernel-chosen port. The UDP socket is bound with
// SO_REUSEPORT on Linux, so [Server.Serve] can add a socket per processor;
// an address another server holds is still refused.
func Listen(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("geodns: listen address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	udpConfig := net.ListenConfig{Control: reusePort}
	tries := 1
	if port == "0" {
		tries = 20 // the UDP port may be taken for TCP: pick again
	} else {
		// A fixed address another server already holds is refused, as it
		// was before SO_REUSEPORT: bound without the option, this probe
		// fails on it, where a reuse-port socket would join its group and
		// take a share of its queries.
		probe, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("geodns: listen udp %s: %w", addr, err)
		}
		_ = probe.Close()
	}
	for i := 0; ; i++ {
		pc, err := udpConfig.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("geodns: listen udp %s: %w", addr, err)
		}
		ua := pc.LocalAddr().(*net.UDPAddr)
		p := strconv.Itoa(ua.Port)
		tcpHost := host
		if host != "" && net.ParseIP(host) == nil {
			tcpHost = ua.IP.String() // a name: bind TCP where UDP went
		}
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(tcpHost, p))
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if i+1 >= tries {
			return nil, nil, fmt.Errorf("geodns: listen tcp %s: %w", net.JoinHostPort(tcpHost, p), err)
		}
	}
}

// ListenAndServe listens on addr over UDP and TCP (see [Listen]) and serves
// until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	pc, ln, err := Listen(ctx, addr)
	if err != nil {
		return err
	}
	s.log.Info("geodns listening", "addr", pc.LocalAddr().String())
	return s.Serve(ctx, pc, ln)
}

// Serve answers queries on udp and tcp (either may be nil, not both) and
// runs the health checker until ctx is done. It then closes both listeners
// and every open TCP connection, waits for in-flight queries, and returns
// nil. Errors while serving (a failed read, accept or write) are logged and
// retried with backoff, never fatal. Serve takes ownership of the listeners.
func (s *Server) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	if udp == nil && tcp == nil {
		return errors.New("geodns: Serve needs a UDP socket, a TCP listener, or both")
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.health.Run(ctx); err != nil && !errors.Is(err, ErrCheckerRunning) {
			s.log.Error("geodns health checker stopped", "err", err)
		}
	})
	var conns []net.PacketConn
	if udp != nil {
		conns = append(conns, udp)
		if uc, ok := udp.(*net.UDPConn); ok {
			conns = append(conns, udpSiblings(ctx, uc, max(udpWorkers, runtime.GOMAXPROCS(0))-1)...)
		}
		for _, pc := range conns {
			if uc, ok := pc.(*net.UDPConn); ok && s.udpBatching {
				bc := newBatchConn(uc)
				wg.Go(func() { s.serveUDPBatch(ctx, bc) })
			} else {
				wg.Go(func() { s.serveUDP(ctx, pc) })
			}
		}
	}
	if tcp != nil {
		wg.Go(func() { s.serveTCP(ctx, tcp) })
	}
	<-ctx.Done()
	for _, pc := range conns {
		_ = pc.Close()
	}
	if tcp != nil {
		_ = tcp.Close()
	}
	wg.Wait()
	return nil
}

// udpSiblings opens up to n more UDP sockets on uc's address, each to be
// served by a reader of its own. Two readers of one socket take turns at
// its read lock and wake each other: measured on 2 cores under dnsperf
// (scripts/bench-dns.sh), GeoDNS spent 8.3-9.1 us of CPU per query with
// two or four readers sharing the socket against 5.6-5.8 us with one.
// It works when uc was bound with SO_REUSEPORT ([Listen] does, on Linux);
// otherwise the first bind fails and uc alone is served, by one reader.
func udpSiblings(ctx context.Context, uc *net.UDPConn, n int) []net.PacketConn {
	lc := net.ListenConfig{Control: reusePort}
	var out []net.PacketConn
	for range n {
		pc, err := lc.ListenPacket(ctx, "udp", uc.LocalAddr().String())
		if err != nil {
			break
		}
		out = append(out, pc)
	}
	return out
}

// Close releases the health checker's connections and the metric
// callbacks. Call it once the server is no longer served.
func (s *Server) Close() error {
	return errors.Join(s.health.Close(), s.queryCounter.Unregister())
}

// serveUDP is its socket's one reader; it answers inline.
func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn) {
	in := make([]byte, dns.MaxMsgSize)
	out := make([]byte, dns.MaxMsgSize)
	uc, fast := pc.(*net.UDPConn)
	var backoff time.Duration
	for {
		var (
			n   int
			src netip.AddrPort
			err error
			ra  net.Addr
		)
		if fast {
			n, src, err = uc.ReadFromUDPAddrPort(in)
		} else {
			n, ra, err = pc.ReadFrom(in)
			if err == nil {
				src = addrPortOf(ra)
			}
		}
		if err != nil {
			if !s.pause(ctx, "geodns udp read", err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		if n >= udpReadSize {
			continue // oversized, as in serveUDPBatch
		}
		resp := s.handle(ctx, in[:n], src.Addr(), false, out)
		if resp == nil {
			continue
		}
		if fast {
			_, err = uc.WriteToUDPAddrPort(resp, src)
		} else {
			_, err = pc.WriteTo(resp, ra)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			s.log.Debug("geodns udp write", "err", err, "client", src.String())
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serveTCP accepts connections until the listener is closed.
func (s *Server) serveTCP(ctx context.Context, ln net.Listener) {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if !s.pause(ctx, "geodns tcp accept", err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		mu.Lock()
		if len(conns) >= maxTCPConns || ctx.Err() != nil {
			mu.Unlock()
			_ = c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			s.serveConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			_ = c.Close()
		})
	}
}

// serveConn answers length-prefixed queries on one TCP connection, in order.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	src := addrPortOf(c.RemoteAddr()).Addr()
	var lenBuf [2]byte
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		// Buffers are taken per message, so idle connections hold none.
		bp := s.tcpBufs.Get().(*tcpBuf)
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, bp.in[:n]); err != nil {
			s.tcpBufs.Put(bp)
			return
		}
		resp := s.handle(ctx, bp.in[:n], src, true, bp.out[2:])
		if resp == nil {
			s.tcpBufs.Put(bp)
			continue
		}
		binary.BigEndian.PutUint16(bp.out[:], uint16(len(resp)))
		_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		_, err := c.Write(bp.out[:2+len(resp)])
		s.tcpBufs.Put(bp)
		if err != nil {
			return
		}
	}
}

type tcpBuf struct {
	in  [dns.MaxMsgSize]byte
	out [2 + dns.MaxMsgSize]byte
}

// handle turns one raw query into a raw reply packed into buf, or nil for
// no reply.
func (s *Server) handle(ctx context.Context, raw []byte, src netip.Addr, tcp bool, buf []byte) []byte {
	req, err := ParseRequest(raw)
	if err != nil {
		return nil // not a query: replying could loop or amplify
	}
	q := Query{Request: req, Source: src, TCP: tcp}
	var m *dns.Msg
	region := -1
	if !tcp && s.limiter != nil {
		switch s.limiter.allow(src) {
		case rrlDrop:
			s.limited.Add(ctx, 1, s.dropAttrs...)
			return nil
		case rrlSlip:
			s.limited.Add(ctx, 1, s.slipAttrs...)
			m = slipReply(&q.Request)
		}
	}
	if m == nil {
		m, region = s.zone.answer(&q, s.health.Snapshot())
	}
	out, err := m.PackBuffer(buf)
	if err != nil {
		// Cannot happen with the records a Zone holds; answer SERVFAIL
		// rather than nothing.
		s.log.Error("geodns pack reply", "err", err, "question", req.Question.String())
		fail := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.ID, Response: true, Opcode: req.Opcode, Rcode: dns.RcodeServerFailure}}
		if out, err = fail.PackBuffer(buf); err != nil {
			return nil
		}
		m = fail
		region = -1
	}
	rc, ok := s.rcodeIndex[m.Rcode]
	if !ok {
		rc = len(metricRcodes)
	}
	cell := rc*s.nRegionCols + region + 1
	if tcp {
		cell += len(s.queries) / 2
	}
	s.queries[cell].Add(1)
	return out
}

// slipReply is the rate limiter's "slip": an empty reply with TC set, which
// sends a genuine client to TCP and gives a reflection attack no gain.
func slipReply(req *Request) *dns.Msg {
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.ID, Response: true, Opcode: req.Opcode,
		RecursionDesired: req.RecursionDesired, Truncated: true}}
	if req.HasQuestion {
		m.Question = []dns.Question{req.Question}
	}
	return m
}

// pause handles a failed read or accept: it reports false when the server
// is stopping, and otherwise logs and waits with a doubling backoff (5 ms
// up to 1 s), so transient errors (ENOBUFS, EMFILE) never spin the CPU.
func (s *Server) pause(ctx context.Context, what string, err error, backoff *time.Duration) bool {
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return false
	}
	*backoff = min(max(*backoff*2, 5*time.Millisecond), time.Second)
	s.log.Warn(what, "err", err, "retry_in", *backoff)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
		return true
	}
}
