package region

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// registrationRequest is RFC 7591 client metadata plus Meridian's
// access_token_format extension.
type registrationRequest struct {
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris,omitempty"`
	ClientName              string          `json:"client_name,omitempty"`
	GrantTypes              []string        `json:"grant_types,omitempty"`
	ResponseTypes           []string        `json:"response_types,omitempty"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method,omitempty"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	AccessTokenFormat       string          `json:"access_token_format,omitempty"`
}

type registrationResponse struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	ClientSecretExpiresAt   int64    `json:"client_secret_expires_at"`
	RedirectURIs            []string `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string `json:"post_logout_redirect_uris,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	AccessTokenFormat       string   `json:"access_token_format"`
}

// register is RFC 7591 dynamic client registration. Dynamically registered
// clients are third-party: users are always asked for consent.
func (p *Provider) register(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var req registrationRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "body must be a JSON object"})
		return
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "only response type code is supported"})
			return
		}
	}
	spec := ClientSpec{
		Name: req.ClientName, RedirectURIs: req.RedirectURIs, PostLogoutRedirectURIs: req.PostLogoutRedirectURIs,
		GrantTypes: req.GrantTypes, AuthMethod: req.TokenEndpointAuthMethod, Public: req.TokenEndpointAuthMethod == AuthNone,
		AccessTokenFormat: req.AccessTokenFormat,
	}
	if len(req.JWKS) > 0 {
		spec.JWKS = string(req.JWKS)
	}
	c, err := CreateClient(r.Context(), p.st, p.codec, p.cfg.Region, spec)
	switch {
	case errors.Is(err, ErrInvalidRedirectURI):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri", "error_description": err.Error()})
		return
	case errors.Is(err, ErrInvalidClientMetadata):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": err.Error()})
		return
	case err != nil:
		p.log.ErrorContext(r.Context(), "client registration failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	writeJSON(w, http.StatusCreated, registrationResponse{
		ClientID: c.ID, ClientSecret: c.Secret, ClientIDIssuedAt: c.CreatedAt.Unix(), ClientSecretExpiresAt: 0,
		RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs, ClientName: c.Name,
		GrantTypes: c.GrantTypes, ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: c.AuthMethod,
		AccessTokenFormat: c.AccessTokenFormat,
	})
}
