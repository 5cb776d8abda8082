package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
)

// binaries returns the directory holding this checkout's commands.
func binaries(t testing.TB) string { return testenv.Binaries(t) }

// TestMain removes the built binaries after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

// proc is one long-running process of a test (a node, the hub, Redis),
// killed when the test ends.
type proc struct {
	t        *testing.T
	name     string
	argv     []string
	readyURL string // polled until it answers 200; empty: readyFn
	readyFn  func() bool
	cmd      *exec.Cmd
	exited   chan struct{}
	log      bytes.Buffer
	logMu    sync.Mutex
}

func newProc(t *testing.T, name string, argv ...string) *proc {
	p := &proc{t: t, name: name, argv: argv}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.output())
		}
	})
	return p
}

// start runs the process and waits until it is ready (bounded: 60s).
func (p *proc) start() {
	t := p.t
	p.cmd = exec.Command(p.argv[0], p.argv[1:]...)
	w := &lockedWriter{mu: &p.logMu, b: &p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(p.cmd, p.exited)
	client := &http.Client{Timeout: time.Second}
	ready := p.readyFn
	if ready == nil {
		ready = func() bool {
			resp, err := client.Get(p.readyURL)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}
	}
	for i := 0; !ready(); i++ {
		select {
		case <-p.exited:
			t.Fatalf("%s exited:\n%s", p.name, p.output())
		default:
		}
		if i > 600 {
			t.Fatalf("%s not ready after 60s:\n%s", p.name, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

func (p *proc) output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// binRegion is one region (eu) of configs/regions.yaml run by the real
// `regional serve` binary on private ports with a private data dir.
type binRegion struct {
	*proc
	t          *testing.T
	bin        string
	configPath string
	addr       string // eu's public address (127.0.0.11:port)
}

// newBinRegion prepares eu on database (empty: SQLite).
func newBinRegion(t *testing.T, database string) *binRegion {
	c := fedtest.WriteConfig(t, fedtest.BinOptions{Database: database})
	bin := binaries(t)
	r := &binRegion{t: t, bin: bin, configPath: c.Path, addr: fedtest.SiteAddr("eu", c.Port)}
	r.proc = newProc(t, "regional serve eu", filepath.Join(bin, "regional"), "serve", "--config", c.Path, "--region", "eu")
	r.proc.readyURL = "http://" + r.addr + "/readyz"
	return r
}

// run runs a `regional` subcommand for eu to completion.
func (r *binRegion) run(stdin string, args ...string) (string, error) {
	return runBin(filepath.Join(r.bin, "regional"), stdin, append(args, "--config", r.configPath, "--region", "eu")...)
}

// runBin runs a command to completion and returns its stdout.
func runBin(path, stdin string, args ...string) (string, error) {
	c := exec.Command(path, args...)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %v: %v: %s%s", filepath.Base(path), args, err, out.String(), errb.String())
	}
	return out.String(), nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// binClient is a client registered with `regional clients add --json`.
type binClient struct {
	ID     string `json:"client_id"`
	Secret string `json:"client_secret"`
}

func (r *binRegion) addClient() binClient {
	out, err := r.run("", "clients", "add", "--redirect-uri", fedtest.AppRedirect, "--first-party",
		"--grant-types", "authorization_code,refresh_token,client_credentials", "--scopes", "meridian:introspect", "--json")
	if err != nil {
		r.t.Fatal(err)
	}
	var c binClient
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.ID == "" {
		r.t.Fatalf("clients add printed %q: %v", out, err)
	}
	return c
}

// httpClient resolves the federation's names to eu's address.
func (r *binRegion) httpClient() *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, r.addr)
		}}}
}

// jsonDecode decodes a JSON object body (nil when it is not one).
func jsonDecode(resp *http.Response) map[string]any {
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return m
}
