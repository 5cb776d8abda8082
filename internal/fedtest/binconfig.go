package fedtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
)

// BinConfig is a private copy of configs/regions.yaml for tests that run
// the built binaries: every port free, data_dir in a temporary directory.
type BinConfig struct {
	Path    string // the config file
	DataDir string // its data_dir
	Port    int    // federation port: every site's public listener
	Admin   int    // every site's admin listener port
	DNS     string // GeoDNS listen address; empty when GeoDNS is off
	Spare   int    // one more free port, distinct from the others (a demo app)
}

// BinOptions edit the example config.
type BinOptions struct {
	// DNS serves GeoDNS on 127.0.0.1 at a free port (else dns.listen is
	// emptied and GeoDNS is off).
	DNS bool
	// Database (if set) backs the first region (eu).
	Database string
	// Redis (if set) backs the hub's lookup table and state.
	Redis string
}

// ExampleConfig is the path of configs/regions.yaml in this checkout.
func ExampleConfig() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "configs", "regions.yaml")
}

// WriteConfig writes a private copy of configs/regions.yaml edited by o.
func WriteConfig(t testing.TB, o BinOptions) BinConfig {
	t.Helper()
	example, err := os.ReadFile(ExampleConfig())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ports := FreePorts(t, 4)
	c := BinConfig{Path: filepath.Join(dir, "regions.yaml"), DataDir: filepath.Join(dir, "data"),
		Port: ports[0], Admin: ports[1], Spare: ports[3]}
	cfg := string(example)
	cfg = strings.ReplaceAll(cfg, ":8080", ":"+strconv.Itoa(c.Port))
	cfg = strings.ReplaceAll(cfg, "port: 8080", "port: "+strconv.Itoa(c.Port))
	cfg = strings.ReplaceAll(cfg, ":9090", ":"+strconv.Itoa(c.Admin))
	if o.DNS {
		c.DNS = fmt.Sprintf("127.0.0.1:%d", ports[2])
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:5354", c.DNS)
	} else {
		cfg = strings.Replace(cfg, "listen: 127.0.0.1:5354", `listen: ""`, 1)
	}
	cfg = strings.Replace(cfg, "data_dir: ./data", "data_dir: "+c.DataDir, 1)
	if o.Database != "" {
		cfg = strings.Replace(cfg, `database: ""`, "database: "+strconv.Quote(o.Database), 1) // the first region is eu
	}
	if o.Redis != "" {
		cfg = strings.Replace(cfg, `redis: ""`, "redis: "+strconv.Quote(o.Redis), 1)
	}
	if err := os.WriteFile(c.Path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// SiteAddr is site's address at port ("eu" → 127.0.0.11:port).
func SiteAddr(site string, port int) string {
	return SiteIP(site) + ":" + strconv.Itoa(port)
}

// ConfigFile writes cfg as a regions.yaml (the keys Config sets) and
// returns its path, so a built binary and in-process nodes share one
// configuration and one data_dir (development keys included).
func ConfigFile(t testing.TB, cfg *config.Config) string {
	t.Helper()
	var b strings.Builder
	q := strconv.Quote
	list := func(xs []string) string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = q(x)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	fd := cfg.Federation
	fmt.Fprintf(&b, "data_dir: %s\nfederation:\n  global_host: %s\n  scheme: %s\n  port: %d\n  cookie_domain: %s\n  topology: %s\n"+
		"  connect_timeout: %s\n  request_timeout: %s\n  drain_period: 0s\n",
		q(cfg.DataDir), fd.GlobalHost, fd.Scheme, fd.Port, fd.CookieDomain, fd.Topology, fd.ConnectTimeout, fd.RequestTimeout)
	site := func(indent string, s config.Site) {
		fmt.Fprintf(&b, "%shost: %s\n%slisten: %s\n%saddresses: %s\n%sdatabase: %s\n",
			indent, s.Host, indent, q(s.Listen), indent, list(s.Addresses), indent, q(s.Database))
	}
	b.WriteString("regions:\n")
	for _, r := range cfg.Regions {
		fmt.Fprintf(&b, "  - id: %s\n", r.ID)
		site("    ", r.Site)
		fmt.Fprintf(&b, "    proximity: %s\n", list(r.Proximity))
		if r.DR != nil {
			b.WriteString("    dr:\n")
			site("      ", *r.DR)
		}
	}
	fmt.Fprintf(&b, "hub:\n  host: %s\n  listen: %s\n  addresses: %s\ntelemetry:\n  log_level: info\n",
		cfg.Hub.Host, q(cfg.Hub.Listen), list(cfg.Hub.Addresses))
	path := filepath.Join(t.TempDir(), "regions.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
