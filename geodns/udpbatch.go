package geodns

import (
	"context"
	"errors"
	"net"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// UDP batching: on Linux, recvmmsg/sendmmsg move up to udpBatch datagrams
// per system call. Profiles of the single-datagram loop show ~75% of the
// CPU in sendto/recvfrom, so this is where throughput comes from.
const (
	udpBatch = 32
	// udpReadSize bounds an accepted UDP query. Real queries are a few
	// hundred octets; a datagram that fills the buffer may have been cut
	// and is dropped.
	udpReadSize = 4096
)

// batchConn is the part of ipv4.PacketConn and ipv6.PacketConn used here;
// both take []socket.Message under their own alias.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(uc *net.UDPConn) batchConn {
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(uc)
	}
	return ipv6.NewPacketConn(uc)
}

// serveUDPBatch is its socket's one reader: it reads a batch,
// answers every query in it and writes the replies back as one batch.
func (s *Server) serveUDPBatch(ctx context.Context, bc batchConn) {
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	outBufs := make([][]byte, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpReadSize)}
		out[i].Buffers = make([][]byte, 1)
		outBufs[i] = make([]byte, max(int(s.zone.maxUDP), 512))
	}
	var backoff time.Duration
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if !s.pause(ctx, "geodns udp read", err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		w := 0
		for i := range n {
			m := &in[i]
			if m.N >= udpReadSize || m.Addr == nil {
				continue
			}
			src := addrPortOf(m.Addr)
			resp := s.handle(ctx, m.Buffers[0][:m.N], src.Addr(), false, outBufs[w])
			if resp == nil {
				continue
			}
			out[w].Buffers[0] = resp
			out[w].Addr = m.Addr
			w++
		}
		for off := 0; off < w; {
			k, err := bc.WriteBatch(out[off:w], 0)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				// Skip the datagram that failed (e.g. an unreachable
				// client) and send the rest.
				s.log.Debug("geodns udp write", "err", err)
				k = max(k, 1)
			}
			off += k
		}
	}
}
