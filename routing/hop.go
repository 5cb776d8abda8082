package routing

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// HopHeader marks a call one region's router forwarded to another. It is
// signed (ECDSA P-256, SHA-256) with the calling region's own federation
// key and verified against that region's configured public key, so neither
// a client nor another region (which holds the shared routing key, but not
// this region's private key) can forge it. The signature covers the
// sending and receiving region, the method, the path and the time: a hop
// is valid for hopWindow, for that one call target, at the region it
// names. A request carrying a valid hop header is always served where it
// lands, which stops any forwarding loop after one hop.
const HopHeader = "Meridian-Hop"

// HopFromHeader is set by the router on a call that arrived with a valid
// hop header, naming the region that sent it; any client-supplied value is
// removed first. Internal endpoints trust only this header.
const HopFromHeader = "Meridian-Hop-From"

// hopWindow bounds how old a hop header may be (clock skew plus latency).
const hopWindow = 30 * time.Second

// hopSigner signs this region's hop headers and checks other regions'.
type hopSigner struct {
	key  *ecdsa.PrivateKey
	peer map[string]*ecdsa.PublicKey
	// also holds further keys per region during a federation-key rotation.
	also map[string][]*ecdsa.PublicKey
}

func hopMessage(from, to, method, path string, ts int64) []byte {
	h := sha256.Sum256([]byte("meridian hop v2\x00" + from + "\x00" + to + "\x00" + method + "\x00" + path + "\x00" + strconv.FormatInt(ts, 10)))
	return h[:]
}

// sign returns the header value for a call from region from to region to.
func (h hopSigner) sign(from, to, method, path string, now time.Time) string {
	ts := now.Unix()
	sig, err := ecdsa.SignASN1(rand.Reader, h.key, hopMessage(from, to, method, path, ts))
	if err != nil {
		return "" // never happens with a valid key; an empty header is refused
	}
	return "v2;" + from + ";" + to + ";" + strconv.FormatInt(ts, 10) + ";" + base64.RawURLEncoding.EncodeToString(sig)
}

// verify checks a header value addressed to region self for a call with
// this method and path, and returns the region it came from.
func (h hopSigner) verify(v, self, method, path string, now time.Time) (string, bool) {
	f := strings.Split(v, ";")
	if len(f) != 5 || f[0] != "v2" || f[2] != self || len(f[4]) > 200 {
		return "", false
	}
	pub := h.peer[f[1]]
	if pub == nil || f[1] == self {
		return "", false
	}
	ts, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return "", false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > hopWindow || d < -hopWindow {
		return "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(f[4])
	if err != nil {
		return "", false
	}
	msg := hopMessage(f[1], f[2], method, path, ts)
	if ecdsa.VerifyASN1(pub, msg, sig) {
		return f[1], true
	}
	for _, k := range h.also[f[1]] {
		if k != nil && ecdsa.VerifyASN1(k, msg, sig) {
			return f[1], true
		}
	}
	return "", false
}

// SignHop returns the hop header value of one call (method, path) from
// region from to region to at now, signed with key (from's federation
// key). The router signs its own hops; SignHop is for tools and tests.
func SignHop(key *ecdsa.PrivateKey, from, to, method, path string, now time.Time) string {
	return hopSigner{key: key}.sign(from, to, method, path, now)
}
