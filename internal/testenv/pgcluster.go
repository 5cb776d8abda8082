package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGServer is a private PostgreSQL server of one test: its own cluster in a
// temporary directory owned by the postgres OS user (initdb and postgres
// refuse to run as root), on a free loopback port. The test stops, crashes,
// restarts and promotes it; the machine's shared PostgreSQL is never
// touched. Start one with PostgresPrimary and add a streaming hot standby
// with Standby.
type PGServer struct {
	t      testing.TB
	bin    string
	dir    string // holds db/ (the cluster) and the unix socket
	port   int
	asUser []string // prefix that drops root privileges, if running as root
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
}

// pgBinDir finds the PostgreSQL server binaries: MERIDIAN_TEST_PG_BIN, or
// the newest /usr/lib/postgresql/<v>/bin holding initdb.
func pgBinDir() (string, error) {
	if d := os.Getenv("MERIDIAN_TEST_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_basebackup")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (set MERIDIAN_TEST_PG_BIN)")
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// PostgresPrimary initialises and starts a private primary that accepts
// replication connections. Without the server binaries the test is
// skipped (and fails when CI=true).
func PostgresPrimary(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		if InCI() {
			t.Fatalf("PostgreSQL server binaries are required when CI=true: %v", err)
		}
		t.Skipf("%v; skipping (CI=true fails instead)", err)
	}
	p := newPGServer(t, bin)
	if out, err := p.command(filepath.Join(bin, "initdb"), "-D", p.dataDir(), "-A", "trust", "-U", "postgres",
		"--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.Start()
	return p
}

func newPGServer(t testing.TB, bin string) *PGServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "meridian-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &PGServer{t: t, bin: bin, dir: dir, port: freeLoopbackPort(t)}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("postgres on port %d:\n%s", p.port, p.Output())
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown postgres %s: %v %s", dir, err, out)
		}
		p.asUser = []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	}
	return p
}

func freeLoopbackPort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (p *PGServer) dataDir() string { return filepath.Join(p.dir, "db") }

func (p *PGServer) command(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, p.asUser...), name), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// URL is the connection URL of the server's postgres database.
func (p *PGServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Port is the server's TCP port on 127.0.0.1.
func (p *PGServer) Port() int { return p.port }

// Standby takes a base backup of p (pg_basebackup -R: a streaming standby
// of p) and starts it as a hot standby on its own port. It makes p's
// replication synchronous with remote_apply, so a commit p acknowledged is
// already visible on the standby: a failover loses nothing acknowledged.
func (p *PGServer) Standby(t testing.TB) *PGServer {
	t.Helper()
	s := newPGServer(t, p.bin)
	if out, err := s.command(filepath.Join(p.bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres",
		"-D", s.dataDir(), "-R", "-X", "stream", "--no-sync", "-c", "fast").CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	s.Start()
	p.Exec(t, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	p.Exec(t, `ALTER SYSTEM SET synchronous_commit = 'remote_apply'`)
	p.Exec(t, `SELECT pg_reload_conf()`)
	// Wait until the standby streams synchronously.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := p.QueryRow(t, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'`, &n); err == nil && n > 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby on port %d never became a synchronous streaming replica:\n%s", s.port, s.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Exec runs one statement on the server.
func (p *PGServer) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRow scans one row of sql into dst.
func (p *PGServer) QueryRow(t testing.TB, sql string, dst ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.QueryRow(ctx, sql).Scan(dst...)
}

// Start runs the postmaster on its port and waits until it accepts
// connections (a hot standby: until it is consistent).
func (p *PGServer) Start() {
	t := p.t
	t.Helper()
	p.mu.Lock()
	p.cmd = p.command(filepath.Join(p.bin, "postgres"), "-D", p.dataDir(), "-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.dir, "-c", "fsync=off",
		"-c", "max_connections=60", "-c", "wal_level=replica", "-c", "max_wal_senders=5", "-c", "hot_standby=on")
	w := &lockedBuffer{mu: &p.mu, b: &p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		p.mu.Unlock()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	go func(c *exec.Cmd) { _ = c.Wait(); close(exited) }(p.cmd)
	p.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.URL())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		select {
		case <-exited:
			t.Fatalf("postgres exited:\n%s", p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres not accepting connections after 30s: %v\n%s", err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Crash stops the server the way a crash does (SIGQUIT: immediate
// shutdown, no checkpoint) and waits until it has exited.
func (p *PGServer) Crash() { p.signal(syscall.SIGQUIT) }

// Stop shuts the server down (fast shutdown) and waits until it has exited.
func (p *PGServer) Stop() { p.signal(syscall.SIGINT) }

func (p *PGServer) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Output is what the server logged.
func (p *PGServer) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedBuffer) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}
