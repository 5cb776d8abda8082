package routing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// HopHeader marks a call one region's router forwarded to another. It is
// MACed with a key derived from the routing key, so a client cannot forge
// it; a request carrying a valid hop header is always served where it
// lands, which stops any forwarding loop after one hop.
const HopHeader = "Meridian-Hop"

// HopFromHeader is set by the router on a call that arrived with a valid
// hop header, naming the region that sent it; any client-supplied value is
// removed first. Internal endpoints trust only this header.
const HopFromHeader = "Meridian-Hop-From"

// hopWindow bounds how old a hop header may be (clock skew plus latency).
const hopWindow = 30 * time.Second

// hopSigner signs hop headers with a key derived from the signing routing
// key and accepts ones derived from any routing key that verifies, so two
// nodes in different phases of a routing-key rotation still accept each
// other's hops.
type hopSigner struct{ keys [][]byte }

func newHopSigner(c *Codec) hopSigner {
	var h hopSigner
	for _, k := range c.DeriveSecrets("router-hop") {
		h.keys = append(h.keys, []byte(k))
	}
	return h
}

func (h hopSigner) mac(from, to string, ts int64) string { return h.macWith(0, from, to, ts) }

func (h hopSigner) macWith(i int, from, to string, ts int64) string {
	m := hmac.New(sha256.New, h.keys[i])
	m.Write([]byte(from + "\x00" + to + "\x00" + strconv.FormatInt(ts, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// sign returns the header value for a call from region from to region to.
func (h hopSigner) sign(from, to string, now time.Time) string {
	ts := now.Unix()
	return "v1;" + from + ";" + to + ";" + strconv.FormatInt(ts, 10) + ";" + h.mac(from, to, ts)
}

// verify checks a header value addressed to region self and returns the
// region it came from.
func (h hopSigner) verify(v, self string, now time.Time) (string, bool) {
	f := strings.Split(v, ";")
	if len(f) != 5 || f[0] != "v1" || f[2] != self {
		return "", false
	}
	ts, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return "", false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > hopWindow || d < -hopWindow {
		return "", false
	}
	for i := range h.keys {
		if hmac.Equal([]byte(f[4]), []byte(h.macWith(i, f[1], f[2], ts))) {
			return f[1], true
		}
	}
	return "", false
}
