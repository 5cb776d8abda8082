package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-id/meridian/config"
)

// demoUsers are seeded once per region; a second run reuses them.
var demoUsers = []struct{ region, username, name string }{
	{"eu", "ada", "Ada Lovelace"},
	{"us", "grace", "Grace Hopper"},
	{"ap", "ken", "Ken Sakamura"},
}

const demoPassword = "meridian-demo"

type demoApp struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

func run(ctx context.Context, cfgPath, bin, demoListen string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	regional := filepath.Join(bin, "regional")
	for _, u := range demoUsers {
		if _, ok := cfg.Region(u.region); !ok {
			continue
		}
		claims, _ := json.Marshal(map[string]string{"name": u.name, "email": u.username + "@" + u.region + ".example"})
		out, err := command(ctx, demoPassword+"\n", regional, "users", "add", "--config", cfgPath, "--region", u.region,
			"--username", u.username, "--password-stdin", "--claims", string(claims))
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("seeding %s in %s: %v: %s", u.username, u.region, err, out)
		}
	}
	app, err := seedApp(ctx, cfg, cfgPath, regional, demoListen)
	if err != nil {
		return err
	}

	var procs []*exec.Cmd
	var wg sync.WaitGroup
	start := func(name, path string, args ...string) error {
		c := exec.CommandContext(ctx, path, args...)
		c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
		c.WaitDelay = 15 * time.Second
		c.Env = append(os.Environ(), "DEMO_CLIENT_SECRET="+app.ClientSecret)
		stdout, _ := c.StdoutPipe()
		c.Stderr = c.Stdout
		if err := c.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		procs = append(procs, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefix(name, stdout)
			if err := c.Wait(); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "[%s] exited: %v\n", name, err)
			}
		}()
		return nil
	}
	// The hub first (it serves GeoDNS too when dns.listen is set), ready
	// before the regions start: they deliver their user changes to it at
	// once, and a hub not yet listening made every region log a failed
	// delivery on the first screen an operator sees.
	if err := start("hub", filepath.Join(bin, "hub"), "serve", "--config", cfgPath); err != nil {
		return err
	}
	if err := waitReady(ctx, readyTarget{"the hub", cfg.DialAddr(cfg.Hub.Site)}); err != nil {
		return err
	}
	for _, r := range cfg.Regions {
		if err := start(r.ID, regional, "serve", "--config", cfgPath, "--region", r.ID); err != nil {
			return err
		}
		if r.DR != nil {
			if err := start(r.ID+"-dr", regional, "serve", "--config", cfgPath, "--region", r.ID, "--dr"); err != nil {
				return err
			}
		}
	}
	edge, err := startEdge(ctx, cfg)
	if err != nil {
		return err
	}
	regions := make([]readyTarget, 0, len(cfg.Regions))
	for _, r := range cfg.Regions {
		regions = append(regions, readyTarget{"region " + r.ID, cfg.DialAddr(r.Site)})
	}
	if err := waitReady(ctx, regions...); err != nil {
		return err
	}
	if err := start("demo-app", filepath.Join(bin, "demo-app"), "--issuer", cfg.GlobalIssuer(), "--client-id", app.ClientID,
		"--listen", demoListen); err != nil {
		return err
	}
	banner(cfg, demoListen, edge)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "localfed: stopping…")
	wg.Wait()
	return nil
}

// seedApp registers the demo app in the first region once and remembers
// its credentials under the data dir.
func seedApp(ctx context.Context, cfg *config.Config, cfgPath, regional, demoListen string) (demoApp, error) {
	path := filepath.Join(cfg.DataDir, "demo-app.json")
	var app demoApp
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &app) == nil && app.ClientID != "" {
		return app, nil
	}
	out, err := command(ctx, "", regional, "clients", "add", "--config", cfgPath, "--region", cfg.Regions[0].ID,
		"--name", "Meridian demo app", "--first-party", "--redirect-uri", "http://"+demoListen+"/callback",
		"--post-logout-redirect-uri", "http://"+demoListen+"/", "--json")
	if err != nil {
		return app, fmt.Errorf("registering the demo app: %v: %s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &app); err != nil {
		return app, fmt.Errorf("registering the demo app: %w", err)
	}
	b, _ := json.Marshal(app)
	return app, os.WriteFile(path, b, 0o600)
}

// command runs path and returns its stdout; stderr (logs, the regional
// command's audit records) is kept out of the output callers parse and
// returned in the error.
func command(ctx context.Context, stdin, path string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, path, args...)
	c.Stdin = strings.NewReader(stdin)
	var errb strings.Builder
	c.Stderr = &errb
	out, err := c.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, errb.String())
	}
	return string(out), err
}

func prefix(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", name, sc.Text())
	}
}

// edge is the development stand-in for DNS.
type edge struct {
	addr string
}

// startEdge serves 127.0.0.1:<federation port>: every *.localhost name a
// browser resolves lands here and is forwarded to the address DNS would
// have given: a region host to its region (or DR site), the global host to
// the default region of the client's subnet.
func startEdge(ctx context.Context, cfg *config.Config) (*edge, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Federation.Port))
	targets := map[string]string{cfg.Hub.Host: cfg.DialAddr(cfg.Hub.Site)}
	for _, r := range cfg.Regions {
		targets[r.Host] = cfg.DialAddr(r.Site)
		if r.DR != nil {
			targets[r.DR.Host] = cfg.DialAddr(*r.DR)
		}
	}
	// The global host goes where GeoDNS answers for the client's address.
	// Every address of a site (GeoDNS answers each healthy one).
	byAddr := map[string]string{}
	for _, r := range cfg.Regions {
		sites := []config.Site{r.Site}
		if r.DR != nil {
			sites = append(sites, *r.DR)
		}
		for _, s := range sites {
			for i, up := range cfg.DialAddrs(s) {
				byAddr[s.Addresses[i]] = up
			}
		}
	}
	global := func(client string) string {
		if cfg.DNS.Listen != "" {
			if ip, err := resolveGlobal(cfg.DNS.Listen, cfg.Federation.GlobalHost, client); err == nil {
				if up, ok := byAddr[ip]; ok {
					return up
				}
			}
		}
		r, ok := cfg.Region(cfg.DNS.DefaultRegion)
		if !ok {
			r = &cfg.Regions[0]
		}
		return cfg.DialAddr(r.Site)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			host, _, err := net.SplitHostPort(pr.In.Host)
			if err != nil {
				host = pr.In.Host
			}
			target, ok := targets[host]
			if !ok {
				client, _, _ := net.SplitHostPort(pr.In.RemoteAddr)
				target = global(client)
			}
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "local edge: "+r.Host+" is not answering: "+err.Error(), http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("edge on %s: %w (is another federation running?)", addr, err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Shutdown(context.Background()) }()
	return &edge{addr: addr}, nil
}

// resolveGlobal asks the GeoDNS server for the global host's A record with
// the client's address as EDNS Client Subnet, as a resolver would.
func resolveGlobal(server, host, client string) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(host), dns.TypeA)
	if ip := net.ParseIP(client).To4(); ip != nil {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: ip.Mask(net.CIDRMask(24, 32))})
		m.Extra = append(m.Extra, o)
	}
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String(), nil
		}
	}
	return "", errors.New("no A record")
}

// readyTarget is a process localfed waits for: its name in messages and
// the address whose /readyz must answer 200.
type readyTarget struct{ name, addr string }

// waitReady waits, within 60 s in all, until every target's /readyz
// answers 200.
func waitReady(ctx context.Context, targets ...readyTarget) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for _, t := range targets {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.addr+"/readyz", nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return errors.New(t.name + " did not become ready within 60s")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func banner(cfg *config.Config, demoListen string, e *edge) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n  Meridian local federation is up.\n\n")
	fmt.Fprintf(&b, "  Open the demo app:  http://%s\n", demoListen)
	fmt.Fprintf(&b, "  Sign in as          ")
	for i, u := range demoUsers {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (resident in %s)", u.username, u.region)
	}
	fmt.Fprintf(&b, "\n  Password            %s\n\n", demoPassword)
	fmt.Fprintf(&b, "  Global host         %s   (served via the local edge %s)\n", cfg.GlobalIssuer(), e.addr)
	for _, r := range cfg.Regions {
		fmt.Fprintf(&b, "  Region %-12s %s -> %s\n", r.ID, cfg.Issuer(&r), cfg.DialAddr(r.Site))
	}
	if cfg.DNS.Listen != "" {
		host, port, _ := net.SplitHostPort(cfg.DNS.Listen)
		fmt.Fprintf(&b, "  GeoDNS              kdig @%s -p %s %s A\n", host, port, cfg.Federation.GlobalHost)
	}
	fmt.Fprintf(&b, "\n  Data is kept in %s; Ctrl-C stops everything.\n\n", cfg.DataDir)
	fmt.Fprint(os.Stderr, b.String())
}
