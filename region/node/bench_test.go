package node_test

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
	"golang.org/x/oauth2"
)

// BenchmarkIntrospectLocalVsRouted measures one introspection call at a
// time, answered by the issuing region directly and through another region's
// router (one extra loopback hop), and reports both medians and their
// difference.
func BenchmarkIntrospectLocalVsRouted(b *testing.B) {
	f := fedtest.Start(b, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "bench")
	v := oauth2.GenerateVerifier()
	code := f.LoginRedirect("eu", app, "bench", v).Query().Get("code")
	_, _, tok := f.Token("eu", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}})
	body := url.Values{"token": {tok["access_token"].(string)}}.Encode()
	measure := func(entry string, n int) []time.Duration {
		c, base := f.At(entry)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 4
		ds := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest(http.MethodPost, base+"/oauth/introspect", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
			start := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ds = append(ds, time.Since(start))
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		slices.Sort(ds)
		return ds
	}
	measure("eu", 200) // warm both paths
	measure("us", 200)
	b.ResetTimer()
	local := measure("eu", b.N)
	routed := measure("us", b.N)
	p50 := func(ds []time.Duration) float64 { return float64(ds[len(ds)/2].Microseconds()) }
	b.ReportMetric(p50(local), "local-p50-µs")
	b.ReportMetric(p50(routed), "routed-p50-µs")
	b.ReportMetric(p50(routed)-p50(local), "hop-µs")
}
