package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a private Redis Cluster of redis-server processes on
// loopback ports, started by StartRedisCluster for one test.
type RedisCluster struct {
	t     testing.TB
	dir   string
	bin   string
	ports []int
	procs []*exec.Cmd
}

// StartRedisCluster starts masters (at least 3) redis-server processes in
// cluster mode, plus replicas per master, on free loopback ports, each in a
// temp dir of its own, joins them with `redis-cli --cluster create`, waits until every node
// reports cluster_state:ok and stops them when the test ends. Nodes keep an
// append-only file fsynced on every write (appendfsync always), so a node
// killed with SIGKILL and restarted has every write it acknowledged, and
// run with cluster-require-full-coverage no, so the slots of live masters
// keep serving while one is down. When redis-server or redis-cli is not
// installed the test is skipped, or fails under CI=true.
func StartRedisCluster(t testing.TB, masters, replicas int) *RedisCluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err != nil || err2 != nil {
		if InCI() {
			t.Fatalf("redis-server and redis-cli are required when CI=true: %v %v", err, err2)
		}
		t.Skipf("redis-server/redis-cli not installed, skipping (set CI=true to fail instead)")
	}
	if masters < 3 {
		t.Fatalf("a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	c := &RedisCluster{t: t, dir: t.TempDir(), bin: bin}
	n := masters * (1 + replicas)
	for range n {
		c.ports = append(c.ports, freeClusterPort(t, c.ports))
	}
	c.procs = make([]*exec.Cmd, n)
	t.Cleanup(c.stopAll)
	for i := range n {
		c.start(i)
	}
	for i := range n {
		c.waitPing(i)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(20 * time.Second)
	return c
}

// freeClusterPort returns a loopback port that is free together with its
// cluster bus port (port+10000) and not in taken.
func freeClusterPort(t testing.TB, taken []int) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if p+10000 > 65535 || containsInt(taken, p) || containsInt(taken, p+10000) || containsInt(taken, p-10000) {
			continue
		}
		bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+10000))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (c *RedisCluster) start(i int) {
	c.t.Helper()
	p := strconv.Itoa(c.ports[i])
	// Each node needs a directory of its own: a replica's full sync renames
	// the received RDB to dump.rdb in its dir, and two replicas sharing a
	// dir can load each other's dataset.
	dir := filepath.Join(c.dir, p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin,
		"--port", p, "--bind", "127.0.0.1", "--daemonize", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+p+".conf",
		"--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no",
		"--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--logfile", filepath.Join(dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start redis-server on %s: %v", p, err)
	}
	c.procs[i] = cmd
}

func (c *RedisCluster) waitPing(i int) {
	c.t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: c.Addrs()[i], MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer cl.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cl.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, strconv.Itoa(c.ports[i]), "redis.log"))
			c.t.Fatalf("redis-server on %s not answering: %v\n%s", c.Addrs()[i], err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitOK polls until every running node reports cluster_state:ok and agrees
// that every slot is served, or fails the test after timeout.
func (c *RedisCluster) WaitOK(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for i, a := range c.Addrs() {
			if c.procs[i] == nil {
				continue
			}
			cl := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
			info, err := cl.ClusterInfo(context.Background()).Result()
			_ = cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				bad = fmt.Sprintf("%s: %v %q", a, err, firstLine(info))
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not ok after %v: %s", timeout, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// Addrs returns the address of every node, in start order.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.ports))
	for i, p := range c.ports {
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out
}

// Client returns a cluster client, closed when the test ends, with short
// timeouts so a dead node is reported quickly.
func (c *RedisCluster) Client() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        c.Addrs(),
		DialTimeout:  300 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		MaxRetries:   2,
	})
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// MasterFor returns the index of the node that masters slot's key, as the
// node at the first running address sees it.
func (c *RedisCluster) MasterFor(key string) int {
	c.t.Helper()
	for i, a := range c.Addrs() {
		if c.procs[i] == nil {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		slot, err := cl.ClusterKeySlot(context.Background(), key).Result()
		if err != nil {
			_ = cl.Close()
			continue
		}
		shards, err := cl.ClusterShards(context.Background()).Result()
		_ = cl.Close()
		if err != nil {
			continue
		}
		for _, sh := range shards {
			for _, r := range sh.Slots {
				if r.Start > slot || slot > r.End {
					continue
				}
				for _, n := range sh.Nodes {
					if n.Role != "master" || n.Health != "online" {
						continue
					}
					for j, p := range c.ports {
						if int64(p) == n.Port {
							return j
						}
					}
				}
			}
		}
	}
	c.t.Fatalf("no master found for %q", key)
	return -1
}

// Nodes returns CLUSTER NODES as seen by the first running node, for
// failure reports.
func (c *RedisCluster) Nodes() string {
	for i, a := range c.Addrs() {
		if c.procs[i] == nil {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		out, err := cl.ClusterNodes(context.Background()).Result()
		_ = cl.Close()
		if err == nil {
			return out
		}
	}
	return "(no node answers)"
}

// Kill stops node i with SIGKILL, like a crash.
func (c *RedisCluster) Kill(i int) {
	c.t.Helper()
	if p := c.procs[i]; p != nil {
		_ = p.Process.Kill()
		_ = p.Wait()
		c.procs[i] = nil
	}
}

// Restart starts node i again on its port, data dir and nodes file, and
// waits until it answers.
func (c *RedisCluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
	c.waitPing(i)
}

func (c *RedisCluster) stopAll() {
	for i := range c.procs {
		if p := c.procs[i]; p != nil {
			_ = p.Process.Kill()
			_ = p.Wait()
			c.procs[i] = nil
		}
	}
}
