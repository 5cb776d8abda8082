package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/mysql"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// generationPath is where a node tells its peer site its database's
// fencing generation (see docs/architecture.md, "Standby and fencing").
const generationPath = "/internal/generation"

// defaultRolePoll is how often a node re-reads its database's role and
// asks its peer site for its generation.
const defaultRolePoll = 2 * time.Second

// SiteDatabase is the database URL of a region's site: the DR site's own
// (regions[i].dr.database) or, when it names none, the region's.
func SiteDatabase(r *config.Region, dr bool) string {
	if dr && r.DR != nil && r.DR.Database != "" {
		return r.DR.Database
	}
	return r.Database
}

// OpenSiteStore opens a site's database and reports its role: on a
// PostgreSQL streaming standby (pg_is_in_recovery) or a read-only
// MySQL/MariaDB replica (@@read_only, MySQL's @@super_read_only) — a
// mysql:// URL opens the MySQL backend — it does not migrate —
// it checks that the replicated schema is current and returns
// region.RoleStandby; otherwise it migrates and returns region.RolePrimary.
// Without a PostgreSQL URL it opens the embedded SQLite file under
// dataDir/<region> (always primary: SQLite has no standby).
func OpenSiteStore(ctx context.Context, r *config.Region, dr bool, dataDir string) (store.Store, region.Role, error) {
	key := fmt.Sprintf("regions[%s].database", r.ID)
	if dr && r.DR != nil && r.DR.Database != "" {
		key = fmt.Sprintf("regions[%s].dr.database", r.ID)
	}
	if db := SiteDatabase(r, dr); db != "" {
		var s interface {
			store.Store
			Migrate(context.Context) error
		}
		var err error
		if strings.HasPrefix(db, "mysql://") {
			s, err = mysql.Open(ctx, db)
		} else {
			s, err = postgres.Open(ctx, db)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", key, err)
		}
		if repl, ok := s.(store.Replication); ok {
			in, err := repl.InRecovery(ctx)
			if err != nil {
				s.Close()
				return nil, 0, fmt.Errorf("%s: %w", key, err)
			}
			if in {
				if err := repl.CheckSchema(ctx); err != nil {
					s.Close()
					return nil, 0, fmt.Errorf("%s: standby: %w", key, err)
				}
				return s, region.RoleStandby, nil
			}
		}
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, 0, fmt.Errorf("%s: migrate: %w", key, err)
		}
		return s, region.RolePrimary, nil
	}
	dir := filepath.Join(dataDir, r.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	s, err := sqlite.Open(ctx, filepath.Join(dir, "meridian.db"))
	if err != nil {
		return nil, 0, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, 0, fmt.Errorf("migrate: %w", err)
	}
	return s, region.RolePrimary, nil
}

// Promote makes a site's database the region's writable one, as
// `regional promote` does: it promotes a standby (pg_promote) and claims
// the fencing generation for the site, so the other site fences itself
// when it sees the new generation. It returns the new record.
func Promote(ctx context.Context, r *config.Region, dr bool, dataDir string) (store.Generation, error) {
	if dr && r.DR == nil {
		return store.Generation{}, fmt.Errorf("regions[%s].dr: not configured", r.ID)
	}
	st, _, err := OpenSiteStore(ctx, r, dr, dataDir)
	if err != nil {
		return store.Generation{}, err
	}
	defer st.Close()
	repl, ok := st.(store.Replication)
	if !ok {
		return store.Generation{}, fmt.Errorf("regions[%s]: the store cannot be promoted", r.ID)
	}
	if err := repl.Promote(ctx); err != nil {
		return store.Generation{}, err
	}
	// A freshly promoted database may still be applying migrations that
	// this binary has and the old primary had not: apply them now.
	if m, ok := st.(interface{ Migrate(context.Context) error }); ok {
		if err := m.Migrate(ctx); err != nil {
			return store.Generation{}, err
		}
	}
	host := r.Host
	if dr {
		host = r.DR.Host
	}
	return repl.ClaimGeneration(ctx, host)
}

// Fence marks a site's database as superseded, as `regional fence` does:
// a node on it refuses to serve (503, /readyz failing) until the database
// is rebuilt from the site that took over. by is the generation to record
// (0: one above the database's own).
func Fence(ctx context.Context, r *config.Region, dr bool, dataDir string, by int64, byHolder string) (store.Generation, error) {
	if dr && r.DR == nil {
		return store.Generation{}, fmt.Errorf("regions[%s].dr: not configured", r.ID)
	}
	st, role, err := OpenSiteStore(ctx, r, dr, dataDir)
	if err != nil {
		return store.Generation{}, err
	}
	defer st.Close()
	if role == region.RoleStandby {
		return store.Generation{}, fmt.Errorf("regions[%s]: the database is a standby: it cannot take writes and needs no fence", r.ID)
	}
	repl, ok := st.(store.Replication)
	if !ok {
		return store.Generation{}, fmt.Errorf("regions[%s]: the store cannot be fenced", r.ID)
	}
	if by <= 0 {
		g, err := repl.Generation(ctx)
		if err != nil {
			return store.Generation{}, err
		}
		by = g.Number + 1
	}
	if byHolder == "" {
		byHolder = "operator"
	}
	return repl.Fence(ctx, by, byHolder)
}

// fencingKey derives the key that MACs generation answers between the
// sites of a region from the region's own federation private key, which
// only the region's primary and DR site hold (another region's secrets
// cannot forge an answer that fences this region).
func fencingKey(regionKey []byte) []byte {
	m := hmac.New(sha256.New, regionKey)
	m.Write([]byte("meridian/fencing/v1"))
	return m.Sum(nil)
}

// generationAnswer is a site's signed statement of its generation.
type generationAnswer struct {
	Region     string `json:"region"`
	Site       string `json:"site"` // host name
	Role       string `json:"role"`
	Generation int64  `json:"generation"`
	Holder     string `json:"holder"`
	MAC        string `json:"mac"`
}

func (a generationAnswer) mac(key []byte, nonce string) string {
	m := hmac.New(sha256.New, key)
	for _, f := range []string{"generation-answer", a.Region, a.Site, a.Role, strconv.FormatInt(a.Generation, 10), a.Holder, nonce} {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Role is the node's current role.
func (n *Node) Role() region.Role { return region.Role(n.role.Load()) }

// Generation is the fencing record of the node's database (zero for a
// store without one).
func (n *Node) Generation(ctx context.Context) (store.Generation, error) {
	if n.repl == nil {
		return store.Generation{}, nil
	}
	return n.repl.Generation(ctx)
}

func (n *Node) setRole(r region.Role, why string, args ...any) {
	if region.Role(n.role.Swap(int32(r))) != r {
		n.log.Warn("regional node role changed", append([]any{"region", n.region.ID, "site", n.site().Host, "role", r.String(), "why", why}, args...)...)
		if r == region.RolePrimary && n.started.Load() {
			n.startPrimaryWork()
		}
	}
}

// settleRole runs at start and on every poll: it turns a database that
// left recovery into this site's (claiming the generation), applies a
// fence recorded in the database, and asks the peer site whether it holds
// a newer generation.
func (n *Node) settleRole(ctx context.Context) {
	if n.repl == nil || n.Role() == region.RoleFenced {
		return
	}
	me := n.site().Host
	// Generations are claimed and compared only between sites with
	// databases of their own: a DR site that shares the primary's
	// database (no regions[i].dr.database) would only take it in turns.
	ownDatabases := n.region.DR != nil && n.region.DR.Database != ""
	if n.Role() == region.RoleStandby {
		in, err := n.repl.InRecovery(ctx)
		if err != nil || in {
			return
		}
		if !ownDatabases {
			n.setRole(region.RolePrimary, "database promoted")
			return
		}
		g, err := n.repl.ClaimGeneration(ctx, me)
		if err != nil {
			n.log.Warn("claiming the generation after promotion failed", "region", n.region.ID, "err", err)
			return
		}
		if g.Fenced() {
			n.setRole(region.RoleFenced, "database is fenced", "generation", g.Number, "fenced_by", g.FencedBy)
			return
		}
		n.setRole(region.RolePrimary, "database promoted", "generation", g.Number)
	}
	g, err := n.repl.Generation(ctx)
	if err != nil {
		return
	}
	if g.Fenced() {
		n.setRole(region.RoleFenced, "database is fenced", "generation", g.Number, "fenced_by", g.FencedBy, "fenced_holder", g.FencedHolder)
		return
	}
	if !ownDatabases {
		return
	}
	if g.Holder != me {
		// A writable database another site claimed: it was promoted (or
		// restored) under us while we were stopped. Take it over.
		if g, err = n.repl.ClaimGeneration(ctx, me); err != nil {
			return
		}
	}
	peer, err := n.askPeer(ctx)
	if err != nil {
		n.log.Debug("peer site generation unavailable", "region", n.region.ID, "err", err)
		return
	}
	if peer.Role == region.RolePrimary.String() && peer.Generation > g.Number && peer.Holder != me {
		g, err := n.repl.Fence(ctx, peer.Generation, peer.Holder)
		if err != nil {
			n.log.Error("recording the fence failed; refusing to serve anyway", "region", n.region.ID, "err", err)
		}
		n.setRole(region.RoleFenced, "peer site holds a newer generation", "generation", g.Number,
			"peer_generation", peer.Generation, "peer", peer.Holder)
	}
}

// peerSite is the region's other site (the DR site of a primary and the
// primary of a DR site); ok is false for a region without a DR site.
func (n *Node) peerSite() (config.Site, bool) {
	if n.region.DR == nil {
		return config.Site{}, false
	}
	if n.dr {
		return n.region.Site, true
	}
	return *n.region.DR, true
}

var errNoPeer = errors.New("no peer site answered")

// askPeer asks each address of the peer site for its signed generation.
func (n *Node) askPeer(ctx context.Context) (generationAnswer, error) {
	peer, ok := n.peerSite()
	if !ok {
		return generationAnswer{}, errNoPeer
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	errs := []error{errNoPeer}
	for _, addr := range n.cfg.DialAddrs(peer) {
		a, err := n.askAddr(ctx, peer, addr, nonce)
		if err == nil {
			return a, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return generationAnswer{}, errors.Join(errs...)
}

func (n *Node) askAddr(ctx context.Context, peer config.Site, addr, nonce string) (generationAnswer, error) {
	d := &net.Dialer{Timeout: n.cfg.Federation.ConnectTimeout}
	tc, _ := n.cfg.Federation.ClientTLS() // federation.tls.ca_file (Validate has read it)
	tr := &http.Transport{TLSClientConfig: tc, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: n.cfg.Federation.RequestTimeout}
	_, port, _ := net.SplitHostPort(addr)
	u := n.cfg.Federation.Scheme + "://" + net.JoinHostPort(peer.Host, port) + generationPath + "?nonce=" + nonce
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return generationAnswer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return generationAnswer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return generationAnswer{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var a generationAnswer
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4096)).Decode(&a); err != nil {
		return generationAnswer{}, err
	}
	got, err := hex.DecodeString(a.MAC)
	want, _ := hex.DecodeString(a.mac(n.fenceKey, nonce))
	if err != nil || !hmac.Equal(got, want) || a.Region != n.region.ID || a.Site != peer.Host {
		return generationAnswer{}, errors.New("generation answer not authenticated")
	}
	return a, nil
}

// serveGeneration answers a peer's generation question, MACed with the
// fencing key over the peer's nonce (so an answer cannot be replayed).
func (n *Node) serveGeneration(w http.ResponseWriter, r *http.Request) {
	nonce := r.URL.Query().Get("nonce")
	if len(nonce) != 32 {
		http.Error(w, "nonce required", http.StatusBadRequest)
		return
	}
	g, err := n.Generation(r.Context())
	if err != nil {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
		return
	}
	a := generationAnswer{Region: n.region.ID, Site: n.site().Host, Role: n.Role().String(), Generation: g.Number, Holder: g.Holder}
	a.MAC = a.mac(n.fenceKey, nonce)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(a)
}

// watchRole re-settles the role every poll interval until ctx ends.
func (n *Node) watchRole(ctx context.Context) {
	t := time.NewTicker(n.rolePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c, cancel := context.WithTimeout(ctx, n.rolePoll+n.cfg.Federation.RequestTimeout)
			n.settleRole(c)
			cancel()
		}
	}
}
