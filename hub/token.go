package hub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-id/meridian/federation"
)

// maxTokenRequest bounds a token request body.
const maxTokenRequest = 64 << 10

// token is the hub's token endpoint. Before op redeems the code (which
// takes it on the first attempt, whatever follows), it authenticates the
// client (private_key_jwt under the region's federation key) and checks
// that the code is that client's, for the same redirect URI and the PKCE
// verifier of its challenge, reading the code without consuming it. A
// request failing any of these gets the OAuth error and leaves the code
// redeemable by its region: a leaked hub code cannot be burned.
func (b *Broker) token(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequest))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", "request body too large or unreadable"))
		return
	}
	form, err := url.ParseQuery(string(raw))
	if err != nil || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", "want an application/x-www-form-urlencoded body"))
		return
	}
	if form.Get("grant_type") != "authorization_code" {
		writeJSON(w, http.StatusBadRequest, apiError("unsupported_grant_type", "only authorization_code is supported"))
		return
	}
	if _, _, ok := r.BasicAuth(); ok || form.Get("client_assertion_type") != federation.ClientAssertionType || form.Get("client_secret") != "" {
		b.invalidClient(w)
		return
	}
	c, ok := b.authenticateClient(form.Get("client_assertion"), form.Get("client_id"))
	if !ok {
		b.invalidClient(w)
		return
	}
	if err := b.storage.checkCode(r.Context(), form.Get("code"), c.id, form.Get("redirect_uri"), form.Get("code_verifier")); err != nil {
		if errors.Is(err, errStateUnavailable) {
			writeJSON(w, http.StatusServiceUnavailable, apiError("temporarily_unavailable", "state store unavailable"))
			return
		}
		writeJSON(w, http.StatusBadRequest, apiError("invalid_grant", err.Error()))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	r.ContentLength = int64(len(raw))
	b.op.ServeHTTP(w, r)
}

func (b *Broker) invalidClient(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="hub"`)
	writeJSON(w, http.StatusUnauthorized, apiError("invalid_client", "client authentication failed"))
}

// authenticateClient verifies a private_key_jwt client assertion for the
// hub's token endpoint: signed by a federation key of the region whose
// client it names (and, when given, client_id names the same client).
func (b *Broker) authenticateClient(assertion, clientID string) (*regionClient, bool) {
	id, err := federation.AssertionIssuer(assertion)
	if err != nil || (clientID != "" && clientID != id) {
		return nil, false
	}
	c, ok := b.storage.clients[id]
	if !ok {
		return nil, false
	}
	iss := strings.TrimSuffix(b.cfg.Issuer, "/")
	for _, aud := range []string{b.cfg.Issuer, iss, iss + "/oauth/token"} {
		if c.verify(assertion, aud, time.Now()) {
			return c, true
		}
	}
	return nil, false
}

// verify reports whether assertion is c's, for aud, under one of c's keys.
func (c *regionClient) verify(assertion, aud string, now time.Time) bool {
	for _, k := range c.keys {
		pub, _ := k.Key.(*ecdsa.PublicKey)
		if federation.VerifyAssertion(assertion, pub, c.id, aud, now) == nil {
			return true
		}
	}
	return false
}

// errStateUnavailable marks a state store failure while checking a code.
var errStateUnavailable = errors.New("state store unavailable")

// checkCode checks, without taking the code, that it is live, belongs to
// clientID's completed authorization request with this redirect URI, and
// that verifier matches the request's S256 challenge.
func (s *storage) checkCode(ctx context.Context, code, clientID, redirectURI, verifier string) error {
	if code == "" || len(code) > 128 {
		return errors.New("invalid code")
	}
	var id string
	switch err := s.state.get(ctx, kindCode, code, &id); {
	case errors.Is(err, ErrStateNotFound):
		return errors.New("invalid code")
	case err != nil:
		return errStateUnavailable
	}
	ar, err := s.authRequest(ctx, id)
	switch {
	case errors.Is(err, ErrStateNotFound):
		return errors.New("invalid code")
	case err != nil:
		return errStateUnavailable
	}
	if !ar.IsDone || ar.ClientID != clientID {
		return errors.New("invalid code")
	}
	if ar.RedirectURI != redirectURI {
		return errors.New("redirect_uri does not correspond")
	}
	sum := sha256.Sum256([]byte(verifier))
	if verifier == "" || ar.CodeChallengeMethod != "S256" ||
		subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ar.CodeChallenge)) != 1 {
		return errors.New("code_verifier does not match the code challenge")
	}
	return nil
}
