package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/testenv"
)

// localFederation is `make run` on private ports: the binaries of this
// checkout, started by localfed with a copy of configs/regions.yaml.
type localFederation struct {
	Port                  int    // federation port (every node, the edge)
	DemoURL               string // the demo app
	DNS                   string // GeoDNS address
	Admin                 map[string]string
	ConfigPath, Bin, Data string
	cmd                   *exec.Cmd
	mu                    sync.Mutex
	log                   strings.Builder
}

// binaries returns the directory holding this checkout's commands.
func binaries(t testing.TB) string { return testenv.Binaries(t) }

// TestMain removes the built binaries after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

// freePorts finds n ports free on every loopback address the example
// config uses.
func freePorts(t testing.TB, n int) []int {
	ips := []string{"127.0.0.1", "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.21", "127.0.0.22", "127.0.0.23"}
	var out []int
	for len(out) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
			u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			u.Close()
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// startLocalFederation runs localfed until the test ends.
func startLocalFederation(t *testing.T) *localFederation {
	bin := binaries(t)
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	dir := t.TempDir()
	f := &localFederation{Port: ports[0], DemoURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		DNS: fmt.Sprintf("127.0.0.1:%d", ports[3]), Bin: bin, Data: filepath.Join(dir, "data"),
		ConfigPath: filepath.Join(dir, "regions.yaml"), Admin: map[string]string{}}
	cfg := string(example)
	cfg = strings.ReplaceAll(cfg, ":8080", ":"+strconv.Itoa(ports[0]))
	cfg = strings.ReplaceAll(cfg, "port: 8080", "port: "+strconv.Itoa(ports[0]))
	cfg = strings.ReplaceAll(cfg, ":9090", ":"+strconv.Itoa(ports[1]))
	cfg = strings.ReplaceAll(cfg, "127.0.0.1:5354", f.DNS)
	cfg = strings.Replace(cfg, "data_dir: ./data", "data_dir: "+f.Data, 1)
	for id, ip := range map[string]string{"hub": "127.0.0.10", "eu": "127.0.0.11", "us": "127.0.0.12", "ap": "127.0.0.13"} {
		f.Admin[id] = fmt.Sprintf("%s:%d", ip, ports[1])
	}
	if err := os.WriteFile(f.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cmd = exec.CommandContext(ctx, filepath.Join(bin, "localfed"), "--config", f.ConfigPath, "--bin", bin,
		"--demo-listen", strings.TrimPrefix(f.DemoURL, "http://"))
	f.cmd.Cancel = func() error { return f.cmd.Process.Signal(syscall.SIGTERM) }
	f.cmd.WaitDelay = 20 * time.Second
	out, _ := f.cmd.StderrPipe()
	f.cmd.Stdout = f.cmd.Stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			f.mu.Lock()
			f.log.WriteString(sc.Text() + "\n")
			f.mu.Unlock()
			if strings.Contains(sc.Text(), "demo-app: open") {
				once.Do(func() { close(up) })
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cancel()
		_ = f.cmd.Wait()
		if t.Failed() {
			t.Logf("localfed output:\n%s", f.Log())
		}
	})
	select {
	case <-up:
	case <-time.After(120 * time.Second):
		t.Fatalf("the federation did not come up:\n%s", f.Log())
	}
	// The demo app serves once discovery through the global host worked.
	for i := 0; ; i++ {
		resp, err := http.Get(f.DemoURL + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 200 {
			t.Fatalf("demo app not answering:\n%s", f.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return f
}

// Log is everything the federation printed so far.
func (f *localFederation) Log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.String()
}
