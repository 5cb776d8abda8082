package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/conformance"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// TestCluster runs the hub table on a real Redis Cluster of three masters
// started by the test: the conformance suite and a rehash on a cluster with
// a replica per master, then a master killed mid-load, with replicas
// (failover, lookups continue) and without (errors are "unavailable", never
// "unknown user"; the master comes back with every write it acknowledged).
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis Cluster processes")
	}
	t.Run("replicas", func(t *testing.T) {
		cl := testenv.StartRedisCluster(t, 3, 1)
		c := cl.Client()
		t.Run("Conformance", func(t *testing.T) {
			conformance.Run(t, func(t *testing.T) lookup.Store {
				return newStore(t, c, redisstore.Options{BucketBits: 8, BatchSize: 300})
			})
		})
		t.Run("Rehash", func(t *testing.T) { testRehash(t, c, false, 8, 9) })
		t.Run("KillMaster", func(t *testing.T) { killMasterMidLoad(t, cl, c, true) })
	})
	t.Run("no-replicas", func(t *testing.T) {
		cl := testenv.StartRedisCluster(t, 3, 0)
		killMasterMidLoad(t, cl, cl.Client(), false)
	})
}

// loadState is what the load goroutines saw.
type loadState struct {
	mu          sync.Mutex
	acked       map[lookup.Key]string // writes whose PutMany returned nil
	unavailable atomic.Int64          // errors matching lookup.ErrUnavailable
	lookups     atomic.Int64          // successful GetMany calls
	lastErr     atomic.Value          // the last unavailable error, for failure reports
}

func (ls *loadState) ackedKeys(n int, r *rand.Rand) []lookup.Key {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	all := make([]lookup.Key, 0, len(ls.acked))
	for k := range ls.acked {
		all = append(all, k)
	}
	if n >= len(all) {
		return all
	}
	out := make([]lookup.Key, n)
	for i := range out {
		out[i] = all[r.IntN(len(all))]
	}
	return out
}

func killMasterMidLoad(t *testing.T, cl *testenv.RedisCluster, c *redis.ClusterClient, replicas bool) {
	ctx := context.Background()
	s := newStore(t, c, redisstore.Options{BucketBits: 10, BatchSize: 250})
	pre := randomEntriesT(t, 10_000)
	if err := s.PutMany(ctx, pre); err != nil {
		t.Fatal(err)
	}
	ls := &loadState{acked: map[lookup.Key]string{}}
	preSet := map[lookup.Key]bool{}
	for _, e := range pre {
		ls.acked[e.Key] = e.Region
		preSet[e.Key] = true
	}
	for replicas {
		// Replication is asynchronous: make sure the preload reached the
		// replicas, the only writes a failover is guaranteed to keep.
		waitFor(t, 10*time.Second, "replicas to catch up with the preload", func() bool {
			return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
				info, err := n.Info(ctx, "replication").Result()
				if err != nil {
					return err
				}
				var master, replica string
				for _, line := range strings.Split(info, "\r\n") {
					if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
						master = v
					}
					if v, ok := strings.CutPrefix(line, "slave0:"); ok {
						for _, f := range strings.Split(v, ",") {
							if o, ok := strings.CutPrefix(f, "offset="); ok {
								replica = o
							}
						}
					}
				}
				if master == "" || master != replica {
					return fmt.Errorf("replica at %s of %s", replica, master)
				}
				return nil
			}) == nil
		})
		// A failover the loaded machine caused on its own (a node slower
		// than the node timeout) may have dropped part of the preload:
		// write it again until it is all there and replicated.
		got, err := s.GetMany(ctx, keys(pre))
		missing := 0
		for i := range got {
			if err == nil && got[i] == "" {
				missing++
			}
		}
		if err == nil && missing == 0 {
			break
		}
		t.Logf("preload: %d entries missing (%v), writing it again", missing, err)
		if err := s.PutMany(ctx, pre); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			batch := randomEntriesT(t, 100)
			err := s.PutMany(ctx, batch)
			switch {
			case err == nil:
				ls.mu.Lock()
				for _, e := range batch {
					ls.acked[e.Key] = e.Region
				}
				ls.mu.Unlock()
			case errors.Is(err, lookup.ErrUnavailable):
				ls.unavailable.Add(1)
			default:
				t.Errorf("PutMany during the outage: %v (want ErrUnavailable)", err)
				return
			}
		}
	}()
	go func() { // reader
		defer wg.Done()
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			keys := ls.ackedKeys(300, r)
			got, err := s.GetMany(ctx, keys)
			switch {
			case err == nil:
				ls.lookups.Add(1)
				for i, g := range got {
					if g == "" {
						// With replicas a write acknowledged just before the
						// crash may be lost (asynchronous replication); the
						// preload was confirmed by WAIT.
						if _, inPre := preSet[keys[i]]; !replicas || inPre {
							t.Errorf("acknowledged key %s reported unknown", keys[i])
							return
						}
					}
				}
			case errors.Is(err, lookup.ErrNotFound):
				t.Errorf("GetMany error %v matches ErrNotFound", err)
				return
			case errors.Is(err, lookup.ErrUnavailable):
				ls.unavailable.Add(1)
				ls.lastErr.Store(err.Error())
			default:
				t.Errorf("GetMany during the outage: %v (want ErrUnavailable)", err)
				return
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Load is flowing; kill the master of bucket 0.
	waitFor(t, 10*time.Second, "lookups before the kill", func() bool { return ls.lookups.Load() >= 3 })
	victim := cl.MasterFor(s.BucketKeys()[0])
	cl.Kill(victim)
	killed := time.Now()
	if !replicas {
		waitFor(t, 15*time.Second, "an unavailable error while the master is down", func() bool { return ls.unavailable.Load() > 0 })
		if _, err := s.Get(ctx, pre[0].Key); err != nil && errors.Is(err, lookup.ErrNotFound) {
			t.Fatalf("Get while a master is down = %v", err)
		}
		cl.Restart(victim)
	}
	cl.WaitOK(20 * time.Second)
	// Lookups work again: every key acknowledged so far is found.
	after := ls.lookups.Load()
	waitFor(t, 15*time.Second, "lookups after recovery", func() bool {
		ok := ls.lookups.Load() >= after+3
		if !ok && time.Since(killed) > 14*time.Second {
			t.Logf("last error: %v\n%s", ls.lastErr.Load(), cl.Nodes())
			for _, a := range cl.Addrs() {
				n := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
				m, err := n.Do(ctx, "HGETALL", s.MetaKey()).Result()
				slot, _ := n.ClusterKeySlot(ctx, s.MetaKey()).Result()
				dbsize, _ := n.DBSize(ctx).Result()
				t.Logf("node %s: meta slot %d, HGETALL meta = %v %v, dbsize %d", a, slot, m, err, dbsize)
				_ = n.Close()
			}
		}
		return ok
	})
	close(stop)
	wg.Wait()

	keys := make([]lookup.Key, 0, len(ls.acked))
	for k := range ls.acked {
		keys = append(keys, k)
	}
	var got []string
	waitFor(t, 15*time.Second, "GetMany of every acknowledged key", func() bool {
		var err error
		got, err = s.GetMany(ctx, keys)
		return err == nil
	})
	lost := 0
	for i, k := range keys {
		switch {
		case got[i] == ls.acked[k]:
		case got[i] == "" && replicas && !preSet[k]:
			lost++
		default:
			t.Errorf("acknowledged key %s: got %q, want %q", k, got[i], ls.acked[k])
		}
	}
	t.Logf("replicas=%v: %d acknowledged entries (%d preloaded), %d unavailable errors, %d written during the load and lost by asynchronous replication",
		replicas, len(keys), len(pre), ls.unavailable.Load(), lost)
}

func keys(es []lookup.Entry) []lookup.Key {
	out := make([]lookup.Key, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

// waitFor polls cond until it holds or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
