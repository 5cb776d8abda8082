package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgBin holds the PostgreSQL 15 server binaries.
const pgBin = "/usr/lib/postgresql/15/bin"

// privatePostgres is a PostgreSQL server of one test: its own cluster in a
// temporary directory, on a free loopback port, stopped and started by the
// test (the machine's shared PostgreSQL is never touched).
type privatePostgres struct {
	t      *testing.T
	dir    string
	port   int
	asUser []string // prefix that drops root privileges, if running as root
	cmd    *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
	mu     sync.Mutex
}

// startPrivatePostgres initialises and starts a private cluster. Without
// the binaries it skips (fails under CI=true), like internal/testenv.
func startPrivatePostgres(t *testing.T) *privatePostgres {
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL server binaries are required when CI=true: %v", err)
		}
		t.Skipf("PostgreSQL server binaries not installed (%v); skipping (CI=true fails instead)", err)
	}
	dir, err := os.MkdirTemp("", "meridian-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &privatePostgres{t: t, dir: dir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root: run them as postgres.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("chown", "postgres:", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("chown postgres %s: %v %s", dir, err, out)
		}
		p.asUser = []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	}
	if out, err := p.command(filepath.Join(pgBin, "initdb"), "-D", filepath.Join(dir, "db"), "-A", "trust", "-U", "postgres",
		"--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *privatePostgres) command(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, p.asUser...), name), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// URL is the connection URL of the private server's postgres database.
func (p *privatePostgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// start runs the postmaster and waits until it accepts connections.
func (p *privatePostgres) start() {
	t := p.t
	p.cmd = p.command(filepath.Join(pgBin, "postgres"), "-D", filepath.Join(p.dir, "db"), "-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.dir, "-c", "fsync=off", "-c", "max_connections=50")
	w := &lockedWriter{mu: &p.mu, b: &p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(p.cmd, p.exited)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.URL())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("postgres exited:\n%s", p.output())
		default:
		}
		if i > 300 {
			t.Fatalf("postgres not accepting connections after 30s: %v\n%s", err, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crash stops the server the way a crash does (SIGQUIT: immediate
// shutdown, every backend killed, no checkpoint) and waits for it to exit.
func (p *privatePostgres) crash() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// stop shuts the server down (fast shutdown) at the end of the test.
func (p *privatePostgres) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

func (p *privatePostgres) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}
