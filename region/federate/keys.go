package federate

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/seal"
)

// UserLister is the part of the region store the listing needs.
type UserLister interface {
	ListUsers(ctx context.Context, after string, limit int) ([]store.User, error)
}

// UserKeysConfig configures NewUserKeysHandler.
type UserKeysConfig struct {
	Region string
	// Issuer is the region's issuer: hub assertions name Issuer+UserKeysPath
	// as their audience.
	Issuer string
	// Codec derives the hub's client id.
	Codec *routing.Codec
	// HubKey is the hub's federation public key, which verifies the hub's
	// client assertion.
	HubKey *ecdsa.PublicKey
	// AlsoHubKeys are further hub public keys during a rotation of the
	// hub's federation key.
	AlsoHubKeys []*ecdsa.PublicKey
	// Hasher computes the lookup keys (k_hub).
	Hasher *lookup.Hasher
	Users  UserLister
	// CursorKey (>= 32 bytes) encrypts the paging cursor, which is the last
	// username of a page: the hub only ever sees it sealed.
	CursorKey []byte
	// PreviousCursorKeys open cursors sealed before a key rotation.
	PreviousCursorKeys [][]byte
}

type userKeys struct {
	cfg UserKeysConfig
	box *seal.Box
}

// NewUserKeysHandler returns the handler of GET UserKeysPath?after=&limit=:
// a page of the region's users' lookup keys, authenticated with a client
// assertion of the hub's client signed by the hub's own key (Authorization:
// Bearer), never a username. Mount it on the
// region's public listener next to the provider.
func NewUserKeysHandler(cfg UserKeysConfig) (http.Handler, error) {
	if cfg.Codec == nil || cfg.Hasher == nil || cfg.Users == nil || cfg.HubKey == nil || cfg.Issuer == "" {
		return nil, errors.New("federation: user keys handler needs issuer, codec, hub key, hasher and users")
	}
	box, err := seal.New("meridian user-keys cursor v1", cfg.CursorKey, cfg.PreviousCursorKeys...)
	if err != nil {
		return nil, err
	}
	return &userKeys{cfg: cfg, box: box}, nil
}

func (h *userKeys) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request", "GET only")
		return
	}
	aud := strings.TrimSuffix(h.cfg.Issuer, "/") + federation.UserKeysPath
	if federation.CheckHubAssertion(h.cfg.Codec, h.cfg.Region, r.Header.Get("Authorization"), aud, append([]*ecdsa.PublicKey{h.cfg.HubKey}, h.cfg.AlsoHubKeys...)...) != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-internal"`)
		writeAPIError(w, http.StatusUnauthorized, "invalid_client", "hub client credentials required")
		return
	}
	q := r.URL.Query()
	limit := federation.DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > federation.MaxPageSize {
			writeAPIError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("limit must be 1..%d", federation.MaxPageSize))
			return
		}
		limit = n
	}
	after := ""
	if c := q.Get("after"); c != "" {
		var err error
		if after, err = h.openCursor(c); err != nil {
			writeAPIError(w, http.StatusBadRequest, "invalid_request", "after is not a cursor of this region")
			return
		}
	}
	users, err := h.cfg.Users.ListUsers(r.Context(), after, limit)
	if err != nil {
		writeAPIError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "user table unavailable")
		return
	}
	page := federation.UserKeysPage{Region: h.cfg.Region, Keys: make([]string, 0, len(users))}
	rotating := h.cfg.Hasher.Rotating()
	for _, u := range users {
		cur, prev, err := h.cfg.Hasher.Keys(u.Username)
		if err != nil {
			continue // cannot be in the table; never happens for normalized names
		}
		page.Keys = append(page.Keys, cur.String())
		if rotating {
			page.PrevKeys = append(page.PrevKeys, prev.String())
		}
	}
	if len(users) == limit {
		if page.Next, err = h.sealCursor(users[len(users)-1].Username); err != nil {
			writeAPIError(w, http.StatusInternalServerError, "server_error", "cursor")
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}

func (h *userKeys) sealCursor(username string) (string, error) {
	return h.box.SealString([]byte(username), "cursor|"+h.cfg.Region, time.Now().Add(cursorTTL))
}

func (h *userKeys) openCursor(c string) (string, error) {
	p, err := h.box.OpenString(c, "cursor|"+h.cfg.Region, time.Now(), 2048)
	return string(p), err
}

// cursorTTL bounds how long a reconciliation may pause between pages.
const cursorTTL = time.Hour

func writeAPIError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
