package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
)

// chromium returns the browser binary, skipping locally (failing under
// CI=true) when it is not installed.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.InCI() {
		t.Fatal("chromium is required when CI=true (apt-get install chromium)")
	}
	t.Skip("chromium not installed")
	return ""
}

// browser starts headless Chromium whose resolver sends the global host to
// the given address (steering it to one region, as GeoDNS would for its
// subnet) and every other *.localhost name to 127.0.0.1, the local edge.
func browser(t *testing.T, globalHostIP string) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("host-resolver-rules", "MAP id.localhost "+globalHostIP),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Run(ctx); err != nil { // start the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a deadline of their own, so a failing
// step leaves the browser alive for a screenshot.
func step(ctx context.Context, actions ...chromedp.Action) error {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(c, actions...)
}

// shoot saves a screenshot as a test artifact when the test has failed.
func shoot(t *testing.T, ctx context.Context, name string) {
	if !t.Failed() {
		return
	}
	var png []byte
	if err := step(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		return
	}
	dir := os.Getenv("MERIDIAN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	_ = os.MkdirAll(dir, 0o755)
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err == nil {
		t.Logf("screenshot: %s", p)
	}
}

func text(ctx context.Context, sel string) (string, error) {
	var s string
	err := step(ctx, chromedp.WaitVisible(sel, chromedp.ByQuery), chromedp.Text(sel, &s, chromedp.ByQuery))
	return s, err
}

// signIn fills the identifier-first login pages it meets.
func signIn(ctx context.Context, username, password string) error {
	return step(ctx,
		chromedp.WaitVisible(`#username`, chromedp.ByID),
		chromedp.SendKeys(`#username`, username, chromedp.ByID),
		chromedp.Submit(`#username`, chromedp.ByID),
		chromedp.WaitVisible(`#password`, chromedp.ByID),
		chromedp.SendKeys(`#password`, password, chromedp.ByID),
		chromedp.Submit(`#password`, chromedp.ByID),
	)
}

// TestBrowserLoginThroughGlobalHost signs a user in to the demo app in a
// real browser steered to ap, then signs in again with SSO, then logs out.
func TestBrowserLoginThroughGlobalHost(t *testing.T) {
	f := startLocalFederation(t)
	ctx := browser(t, "127.0.0.13") // GeoDNS would answer ap for this browser
	// grace is resident in us; the demo app is registered in eu; the browser
	// is steered to ap: the hub brokers the login to us.
	user, region := "grace", "us"
	defer shoot(t, ctx, "browser-login")
	if err := step(ctx, chromedp.Navigate(f.DemoURL+"/"), chromedp.Click(`#login`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if err := signIn(ctx, user, "meridian-demo"); err != nil {
		t.Fatalf("login pages: %v", err)
	}
	claims, err := text(ctx, "#claims")
	if err != nil {
		t.Fatalf("no claims after login: %v", err)
	}
	if !strings.Contains(claims, `"preferred_username": "`+user+`"`) && !strings.Contains(claims, `"sub"`) {
		t.Fatalf("claims: %s", claims)
	}
	if ui, _ := text(ctx, "#userinfo"); !strings.Contains(ui, user+"@"+region+".example") {
		t.Fatalf("userinfo shows %s, want %s's", ui, user)
	}
	// A second app login is SSO: no password page.
	if err := step(ctx, chromedp.Click(`#login-again`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if _, err := text(ctx, "#signed-in"); err != nil {
		t.Fatalf("SSO login did not come back signed in: %v", err)
	}
	// Logout ends the session: the next login asks for the username again.
	if err := step(ctx, chromedp.Click(`#logout`, chromedp.ByID), chromedp.WaitVisible(`#login`, chromedp.ByID),
		chromedp.Click(`#login`, chromedp.ByID), chromedp.WaitVisible(`#username`, chromedp.ByID)); err != nil {
		t.Fatalf("after logout: %v", err)
	}

	// The operators' view: metrics on the admin listeners.
	for _, want := range []struct{ admin, metric string }{
		{f.Admin["eu"], "http_server_request"},
		{f.Admin["ap"], "meridian_routing_decisions_total"},
		{f.Admin["hub"], "meridian_lookup_resolves_total"},
		{f.Admin["hub"], "meridian_hub_logins_total"},
		{f.Admin["hub"], "geodns_queries_total"},
		{f.Admin["hub"], "geodns_upstream_up"},
	} {
		body := get(t, "http://"+want.admin+"/metrics")
		if !strings.Contains(body, want.metric) {
			t.Errorf("%s/metrics lacks %s", want.admin, want.metric)
		}
	}

	// The operators' log pipeline: a failed client authentication makes
	// the OIDC library log a warning; like every other line a node or the
	// hub printed, it must be one JSON object with service and instance.
	resp, err := http.PostForm("http://"+fedtest.SiteAddr("eu", f.Port)+"/oauth/token",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody"}, "client_secret": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown client at the token endpoint: %d", resp.StatusCode)
	}
	// localfed relays the nodes' stderr: wait for eu's record, then read
	// every line.
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(f.Log(), `"oidc_error":{`) {
			break
		}
	}
	seen := 0
	for _, line := range strings.Split(f.Log(), "\n") {
		site, rest, ok := strings.Cut(line, "] ")
		if !ok || !strings.HasPrefix(site, "[") || site == "[demo-app" || strings.HasPrefix(rest, "exited: ") {
			continue // localfed's own lines, the demo app's
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(rest), &m); err != nil || m["service"] == nil || m["instance"] == nil {
			t.Errorf("%s] printed a line that is not a JSON log record: %q", site, rest)
			continue
		}
		if oe, _ := m["oidc_error"].(map[string]any); site == "[eu" && oe["type"] == "invalid_client" {
			seen++
		}
	}
	if seen == 0 {
		t.Error("eu did not log the failed client authentication as a JSON record")
	}
}

func get(t *testing.T, u string) string {
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return string(b)
}
