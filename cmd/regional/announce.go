package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// usersAnnounce writes every user of the region's database into the
// region's own partition of the mesh lookup table (docs/operations.md,
// "Mesh topology"): the step that makes the users of a federation upgraded
// from the single shared table resolvable again, and a repair for a
// partition that lost entries. Its partition is <prefix>lookup:<region>:,
// federate.LookupPrefix with the default prefix. It uses the region's own Redis user
// (hub.redis), which may write only this partition; entries are
// idempotent, so running it twice, or while the node's outbox pushes
// changes, is harmless.
func usersAnnounce(e *env, fv *flagValues) error {
	if e.cfg.Federation.Topology != federation.TopologyMesh {
		return errors.New("users announce: only in mesh topology; in hub topology the hub reconciles the table (hub reconcile --fix)")
	}
	if e.cfg.Hub.Redis == "" {
		return errors.New("users announce: hub.redis is not set: mesh topology keeps the lookup table in Redis")
	}
	key, err := e.cfg.Secret("hub.key_file", e.cfg.Hub.KeyFile, filepath.Join(e.data, "secrets", "hub.key"), e.tel.Log)
	if err != nil {
		return err
	}
	h, err := lookup.NewHasher(key, nil)
	if err != nil {
		return fmt.Errorf("hub.key_file: %w", err)
	}
	ro, err := redis.ParseURL(e.cfg.Hub.Redis)
	if err != nil {
		return fmt.Errorf("hub.redis: %w", err)
	}
	c := redis.NewClient(ro)
	defer c.Close()
	part, err := redisstore.New(e.ctx, c, redisstore.Options{Prefix: fv.prefix + "lookup:" + e.region + ":"})
	if err != nil {
		return fmt.Errorf("hub.redis: %w", err)
	}
	t, err := lookup.NewTable(h, part)
	if err != nil {
		return err
	}
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	var listErr error
	names := func(yield func(string, string) bool) {
		after := ""
		for {
			users, err := st.ListUsers(e.ctx, after, 500)
			if err != nil {
				listErr = err
				return
			}
			for _, u := range users {
				if !yield(u.Username, e.region) {
					return
				}
			}
			if len(users) < 500 {
				return
			}
			after = users[len(users)-1].Username
		}
	}
	n, err := t.Import(e.ctx, names, nil)
	if err == nil {
		err = listErr
	}
	if err != nil {
		return fmt.Errorf("after %d users: %w", n, err)
	}
	e.audit("users.announce", slog.Int("users", n))
	fmt.Fprintf(e.stdout, "announced %d users into region %s's partition\n", n, e.region)
	return nil
}
