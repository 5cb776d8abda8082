// Package oidctest drives Meridian's login pages the way a browser does, for
// end-to-end tests: a cookie jar, redirects followed hop by hop, hidden form
// fields carried over, and a dialer that resolves federation host names to
// the loopback listeners that serve them.
package oidctest

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Resolver maps host names (without port) to loopback IPs, standing in for
// DNS in tests.
type Resolver struct {
	mu    sync.Mutex
	hosts map[string]string
}

// NewResolver returns a resolver with the given host → IP entries.
func NewResolver(hosts map[string]string) *Resolver {
	r := &Resolver{hosts: map[string]string{}}
	for h, ip := range hosts {
		r.hosts[h] = ip
	}
	return r
}

// Set maps host to ip.
func (r *Resolver) Set(host, ip string) {
	r.mu.Lock()
	r.hosts[host] = ip
	r.mu.Unlock()
}

// Lookup returns host's IP, if the map has it.
func (r *Resolver) Lookup(host string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ip, ok := r.hosts[host]
	return ip, ok
}

// DialContext dials addr with its host resolved through the map.
func (r *Resolver) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if ip, ok := r.hosts[host]; ok {
		host = ip
	}
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort(host, port))
}

// Client returns an HTTP client that resolves through r.
func (r *Resolver) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: r.DialContext}}
}

// Browser is a cookie-keeping HTTP client that does not follow redirects.
type Browser struct {
	t testing.TB
	C *http.Client
}

// NewBrowser returns a browser using transport (nil: the default).
func NewBrowser(t testing.TB, transport http.RoundTripper) *Browser {
	jar, _ := cookiejar.New(nil)
	return &Browser{t: t, C: &http.Client{Jar: jar, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// Get fetches u.
func (b *Browser) Get(u string) *http.Response {
	b.t.Helper()
	resp, err := b.C.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp
}

// Post posts form to u.
func (b *Browser) Post(u string, form url.Values) *http.Response {
	b.t.Helper()
	resp, err := b.C.PostForm(u, form)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z]+)" value="([^"]*)">`)
var actionRE = regexp.MustCompile(`<form method="post" action="([^"]*)">`)

// Page is a served HTML page.
type Page struct {
	URL    *url.URL
	Status int
	Body   string
	Hidden url.Values
	Action string
}

// ReadPage reads an HTML answer and its forms' hidden fields.
func ReadPage(resp *http.Response) Page {
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p := Page{URL: resp.Request.URL, Status: resp.StatusCode, Body: string(body), Hidden: url.Values{}}
	for _, m := range hiddenRE.FindAllStringSubmatch(p.Body, -1) {
		p.Hidden.Set(m[1], html.UnescapeString(m[2]))
	}
	if m := actionRE.FindStringSubmatch(p.Body); m != nil {
		p.Action = html.UnescapeString(m[1])
	}
	return p
}

// Follow follows redirects while stop(location) is false; it returns the
// first response that is not a redirect or whose target satisfies stop.
func (b *Browser) Follow(resp *http.Response, stop func(*url.URL) bool) *http.Response {
	b.t.Helper()
	for i := 0; i < 20 && resp.StatusCode >= 300 && resp.StatusCode < 400; i++ {
		loc, err := resp.Location()
		if err != nil {
			b.t.Fatal(err)
		}
		if stop(loc) {
			return resp
		}
		resp.Body.Close()
		resp = b.Get(loc.String())
	}
	return resp
}

// StopAt stops following at URLs starting with prefix (the client's redirect URI).
func StopAt(prefix string) func(*url.URL) bool {
	return func(u *url.URL) bool { return strings.HasPrefix(u.String(), prefix) }
}

// Submit posts a page's form with its hidden fields plus extra.
func (b *Browser) Submit(p Page, extra url.Values) *http.Response {
	b.t.Helper()
	form := url.Values{}
	for k, v := range p.Hidden {
		form[k] = v
	}
	for k, v := range extra {
		form[k] = v
	}
	target, err := p.URL.Parse(p.Action)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.Post(target.String(), form)
}

// Login starts at authURL, follows redirects across hosts, fills the
// username and password pages it meets and returns the redirect to the
// client (a URL starting with redirectPrefix).
func (b *Browser) Login(authURL, redirectPrefix, username, password string) *url.URL {
	b.t.Helper()
	stop := StopAt(redirectPrefix)
	resp := b.Follow(b.Get(authURL), stop)
	for step := 0; step < 8; step++ {
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			loc, _ := resp.Location()
			resp.Body.Close()
			return loc
		}
		p := ReadPage(resp)
		switch {
		case p.Status != http.StatusOK:
			b.t.Fatalf("login at %s: status %d: %s", p.URL, p.Status, p.Body)
		case strings.Contains(p.Body, `name="password"`):
			resp = b.Follow(b.Submit(p, url.Values{"username": {username}, "password": {password}}), stop)
		case strings.Contains(p.Body, `name="username"`):
			resp = b.Follow(b.Submit(p, url.Values{"username": {username}}), stop)
		default:
			b.t.Fatalf("unexpected page at %s: %s", p.URL, p.Body)
		}
	}
	b.t.Fatal("login did not finish")
	return nil
}

// OAuthError is an RFC 6749 §5.2 error body.
type OAuthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// PostForm posts form to u with optional HTTP Basic client credentials and
// decodes the JSON answer.
func PostForm(t testing.TB, c *http.Client, u string, form url.Values, user, pass string) (int, OAuthError, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e OAuthError
	var m map[string]any
	_ = json.Unmarshal(raw, &e)
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, e, m
}
