// Command demo-app is a small relying party that signs a user in through
// the federation's global host with unmodified go-oidc and x/oauth2, then
// shows the ID token claims and which region answered each step.
//
//	demo-app --issuer http://id.localhost:8080 --client-id … --client-secret … --listen 127.0.0.1:9000
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func main() {
	issuer := flag.String("issuer", "http://id.localhost:8080", "the federation's global issuer")
	clientID := flag.String("client-id", "", "client_id registered at the app's resident region")
	secret := flag.String("client-secret", os.Getenv("DEMO_CLIENT_SECRET"), "client secret (or DEMO_CLIENT_SECRET)")
	listen := flag.String("listen", "127.0.0.1:9000", "listen address")
	loopback := flag.String("localhost-ip", "127.0.0.1", "address *.localhost names resolve to (RFC 6761); empty: system resolver")
	flag.Parse()
	if *clientID == "" || *secret == "" {
		log.Fatal("demo-app: --client-id and --client-secret are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	app, err := newApp(ctx, *issuer, *clientID, *secret, "http://"+*listen+"/callback", *loopback)
	if err != nil {
		log.Fatalf("demo-app: %v", err)
	}
	srv := &http.Server{Addr: *listen, Handler: app, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Shutdown(context.Background()) }()
	log.Printf("demo-app: open http://%s", *listen)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// app is the relying party. Its state (pending logins) is in memory.
type app struct {
	conf     oauth2.Config
	verifier *oidc.IDTokenVerifier
	provider *oidc.Provider
	client   *http.Client
	issuer   string

	mu      sync.Mutex
	pending map[string]pending
}

type pending struct {
	verifier, nonce string
}

type step struct{ What, Region string }

// localhostDialer resolves *.localhost to the loopback address, as RFC 6761
// asks and browsers do; Go's resolver does not.
func localhostDialer(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && ip != "" && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
			addr = net.JoinHostPort(ip, port)
		}
		return d.DialContext(ctx, network, addr)
	}
}

func newApp(ctx context.Context, issuer, id, secret, redirect, loopback string) (*app, error) {
	a := &app{issuer: issuer, pending: map[string]pending{},
		client: &http.Client{Timeout: 15 * time.Second, Transport: &regionRecorder{base: &http.Transport{DialContext: localhostDialer(loopback)}}}}
	var err error
	for i := 0; i < 60; i++ { // the federation may still be starting
		if a.provider, err = oidc.NewProvider(oidc.ClientContext(ctx, a.client), issuer); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("discovery at %s: %w", issuer, err)
	}
	a.conf = oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: a.provider.Endpoint(), RedirectURL: redirect,
		Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}
	a.verifier = a.provider.Verifier(&oidc.Config{ClientID: id})
	return a, nil
}

// regionRecorder remembers which region answered the last back-channel call
// (the X-Meridian-Region response header).
type regionRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	last string
}

func (r *regionRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.last = resp.Header.Get("X-Meridian-Region")
		r.mu.Unlock()
	}
	return resp, err
}

func (r *regionRecorder) region() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == "" {
		return "?"
	}
	return r.last
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	switch r.URL.Path {
	case "/":
		page.Execute(w, view{Issuer: a.issuer})
	case "/login":
		state, verifier, nonce := random(), oauth2.GenerateVerifier(), random()
		a.mu.Lock()
		a.pending[state] = pending{verifier: verifier, nonce: nonce}
		a.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "demo_state", Value: state, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), http.StatusFound)
	case "/callback":
		a.callback(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (a *app) callback(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("demo_state")
	q := r.URL.Query()
	if err != nil || c.Value != q.Get("state") {
		http.Error(w, "state mismatch: start again at /", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	p, ok := a.pending[c.Value]
	delete(a.pending, c.Value)
	a.mu.Unlock()
	if !ok {
		http.Error(w, "unknown login: start again at /", http.StatusBadRequest)
		return
	}
	if e := q.Get("error"); e != "" {
		page.Execute(w, view{Issuer: a.issuer, Error: e + ": " + q.Get("error_description")})
		return
	}
	if q.Get("iss") != a.issuer { // RFC 9207 mix-up defence
		http.Error(w, "authorization response from an unexpected issuer", http.StatusBadRequest)
		return
	}
	rec := a.client.Transport.(*regionRecorder)
	ctx := oidc.ClientContext(r.Context(), a.client)
	tok, err := a.conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		page.Execute(w, view{Issuer: a.issuer, Error: "code exchange: " + err.Error()})
		return
	}
	steps := []step{{"code exchange (POST /oauth/token)", rec.region()}}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := a.verifier.Verify(ctx, raw)
	if err != nil || idt.Nonce != p.nonce {
		page.Execute(w, view{Issuer: a.issuer, Error: fmt.Sprintf("ID token rejected: %v", err)})
		return
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	ui, err := a.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	var uiClaims map[string]any
	if err == nil {
		_ = ui.Claims(&uiClaims)
		steps = append(steps, step{"userinfo (GET /userinfo)", rec.region()})
	}
	pretty, _ := json.MarshalIndent(claims, "", "  ")
	prettyUI, _ := json.MarshalIndent(uiClaims, "", "  ")
	tag := strings.SplitN(tok.AccessToken, ".", 4)
	issuedBy := "?"
	if len(tag) == 4 {
		issuedBy = tag[2]
	}
	page.Execute(w, view{Issuer: a.issuer, Claims: string(pretty), Userinfo: string(prettyUI), Steps: steps,
		TokenRegion: issuedBy, Subject: idt.Subject, Logout: a.logoutURL(raw)})
}

func (a *app) logoutURL(idToken string) string {
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if a.provider.Claims(&meta) != nil || meta.EndSession == "" {
		return ""
	}
	return meta.EndSession + "?" + url.Values{"id_token_hint": {idToken}, "client_id": {a.conf.ClientID},
		"post_logout_redirect_uri": {strings.TrimSuffix(a.conf.RedirectURL, "/callback") + "/"}}.Encode()
}

type view struct {
	Issuer, Error, Claims, Userinfo, TokenRegion, Subject, Logout string
	Steps                                                         []step
}

var page = template.Must(template.New("p").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Meridian demo app</title><style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;color:#1d2430}
pre{background:#f4f5f7;padding:1rem;border-radius:6px;overflow:auto}a.button{display:inline-block;padding:.6rem 1.2rem;background:#2456c9;color:#fff;border-radius:4px;text-decoration:none}
.err{color:#b00020}td{padding:.2rem .8rem .2rem 0}</style></head><body>
<h1>Meridian demo app</h1>
<p>Signs in through <code>{{.Issuer}}</code>, the federation's one global host.</p>
{{if .Error}}<p class="err" id="error">{{.Error}}</p>{{end}}
{{if .Claims}}
<p id="signed-in">Signed in as <b id="sub">{{.Subject}}</b>. Tokens issued by region <b id="token-region">{{.TokenRegion}}</b>.</p>
<table>{{range .Steps}}<tr><td>{{.What}}</td><td>answered by <b>{{.Region}}</b></td></tr>{{end}}</table>
<h2>ID token claims</h2><pre id="claims">{{.Claims}}</pre>
<h2>Userinfo</h2><pre id="userinfo">{{.Userinfo}}</pre>
<p><a class="button" href="/login" id="login-again">Sign in again (SSO)</a> {{if .Logout}}<a class="button" href="{{.Logout}}" id="logout">Sign out</a>{{end}}</p>
{{else}}<p><a class="button" href="/login" id="login">Sign in</a></p>{{end}}
</body></html>`))
