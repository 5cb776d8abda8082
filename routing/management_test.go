package routing

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDecideManagement: the RFC 7592 client configuration endpoint and the
// admin API on one client go to the client's region, the admin API's
// collection to the region of the caller's token; forged or unknown tags
// stay local (where they get the protocol's error), reads are safe to
// repeat at a DR site and writes are not.
func TestDecideManagement(t *testing.T) {
	f := newFixture(t, nil)
	euClient, usClient := f.mint(t, KindClient, "eu"), f.mint(t, KindClient, "us")
	euAT, usAT := f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "us")
	req := func(method, path, bearer string) *http.Request {
		r := httptest.NewRequest(method, path, strings.NewReader("{}"))
		r.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		return r
	}
	tests := []struct {
		name   string
		req    *http.Request
		action Action
		region string
		safe   bool
	}{
		{"7592 read eu client", req("GET", "/register/"+euClient, "x"), Proxy, "eu", true},
		{"7592 update eu client", req("PUT", "/register/"+euClient, "x"), Proxy, "eu", false},
		{"7592 delete eu client", req("DELETE", "/register/"+euClient, "x"), Proxy, "eu", false},
		{"7592 local client", req("GET", "/register/"+usClient, "x"), Local, "us", false},
		{"7592 forged client", req("GET", "/register/"+flipChar(euClient), "x"), Local, "us", false},
		{"7592 register itself", req("POST", "/register", "x"), Local, "us", false},
		{"admin get eu client with us token", req("GET", "/admin/clients/"+euClient, usAT), Proxy, "eu", true},
		{"admin rotate eu client", req("POST", "/admin/clients/"+euClient+"/secret", euAT), Proxy, "eu", false},
		{"admin delete eu client", req("DELETE", "/admin/clients/"+euClient, euAT), Proxy, "eu", false},
		{"admin forged client", req("PUT", "/admin/clients/"+flipChar(euClient), euAT), Local, "us", false},
		{"admin list by eu token", req("GET", "/admin/clients", euAT), Proxy, "eu", true},
		{"admin create by eu token", req("POST", "/admin/clients", euAT), Proxy, "eu", false},
		{"admin list by us token", req("GET", "/admin/clients", usAT), Local, "us", false},
		{"admin list without token", req("GET", "/admin/clients", ""), Local, "us", false},
		{"admin list forged token", req("GET", "/admin/clients", flipChar(euAT)), Local, "us", false},
		{"admin list by jwt kid", req("GET", "/admin/clients", fakeJWT("eu-abc")), Proxy, "eu", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.router.Decide(tt.req, tt.req.URL.Query())
			if d.Action != tt.action || d.Region != tt.region || d.Safe != tt.safe {
				t.Fatalf("Decide = %+v, want %v %s safe=%v", d, tt.action, tt.region, tt.safe)
			}
		})
	}
}
