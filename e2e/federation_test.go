package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
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

// startLocalFederation runs localfed until the test ends.
func startLocalFederation(t *testing.T) *localFederation {
	bin := binaries(t)
	c := fedtest.WriteConfig(t, fedtest.BinOptions{DNS: true})
	f := &localFederation{Port: c.Port, DemoURL: fmt.Sprintf("http://127.0.0.1:%d", c.Spare),
		DNS: c.DNS, Bin: bin, Data: c.DataDir, ConfigPath: c.Path, Admin: map[string]string{}}
	for _, id := range []string{"hub", "eu", "us", "ap"} {
		f.Admin[id] = fedtest.SiteAddr(id, c.Admin)
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
