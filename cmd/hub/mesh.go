package main

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/cli"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// mesh reports whether the federation runs in mesh topology, where the
// lookup table is one Redis partition per region (<prefix>lookup:<region>:)
// instead of the hub's single table.
func (e *env) mesh() bool { return e.cfg.Federation.Topology == federation.TopologyMesh }

// meshClient connects to the mesh table with hub.redis, which for these
// commands must be an operator (admin) Redis user allowed to write every
// partition, not a region's user (docs/operations.md, Mesh topology).
func (e *env) meshClient() (*redis.Client, error) {
	if e.cfg.Hub.Redis == "" {
		return nil, errors.New("mesh topology: hub.redis is not set; the table commands need the operator's Redis URL of the mesh table")
	}
	ro, err := redis.ParseURL(e.cfg.Hub.Redis)
	if err != nil {
		return nil, fmt.Errorf("hub.redis: %w", err)
	}
	return redis.NewClient(ro), nil
}

// partition opens region's mesh partition on c.
func (e *env) partition(c *redis.Client, region string, readOnly bool) (*redisstore.Store, error) {
	st, err := redisstore.New(e.ctx, c, redisstore.Options{Prefix: e.prefix + "lookup:" + region + ":", ReadOnly: readOnly,
		ExpectedUsers: e.cfg.Hub.ExpectedUsers})
	if err != nil {
		return nil, fmt.Errorf("partition of %s: %w", region, err)
	}
	return st, nil
}

// meshClaims returns, for every key that some partition claims for its own
// region, the claiming regions in configuration order.
func (e *env) meshClaims(c *redis.Client) (map[lookup.Key][]string, error) {
	claims := map[lookup.Key][]string{}
	for _, r := range e.cfg.RegionIDs() {
		st, err := e.partition(c, r, true)
		if errors.Is(err, lookup.ErrNoPartition) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := st.Scan(e.ctx, func(en lookup.Entry) error {
			if en.Region == r { // as lookup.Partitioned: an entry counts only in its own region's partition
				claims[en.Key] = append(claims[en.Key], r)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("partition of %s: %w", r, err)
		}
	}
	return claims, nil
}

// meshConflicts lists the keys claimed by more than one region's partition,
// or, with --resolve KEY --region R, keeps the user in R by deleting the
// other claimants' entries (audited on stderr).
func meshConflicts(e *env) error {
	var key lookup.Key
	if e.flags.resolve != "" {
		k, err := federation.ParseKey(e.flags.resolve)
		if err != nil {
			return cli.Usagef("--resolve: %v", err)
		}
		if err := e.checkRegion(); err != nil {
			return err
		}
		key = k
	} else if e.flags.region != "" {
		return cli.Usagef("--region needs --resolve")
	}
	c, err := e.meshClient()
	if err != nil {
		return err
	}
	defer c.Close()
	claims, err := e.meshClaims(c)
	if err != nil {
		return err
	}
	if e.flags.resolve == "" {
		var keys []lookup.Key
		for k, rs := range claims {
			if len(rs) > 1 {
				keys = append(keys, k)
			}
		}
		slices.SortFunc(keys, func(a, b lookup.Key) int { return strings.Compare(a.String(), b.String()) })
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tREGIONS")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(claims[k], ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(keys) > 0 {
			fmt.Fprintln(e.stdout, "resolve: find which account is genuine, then hub conflicts --resolve KEY --region R")
		}
		return nil
	}
	rs := claims[key]
	if len(rs) < 2 {
		return fmt.Errorf("%s is not a conflict (claimed by %v)", key, rs)
	}
	if !slices.Contains(rs, e.flags.region) {
		return fmt.Errorf("%s: region %s does not claim it (claimed by %s)", key, e.flags.region, strings.Join(rs, ","))
	}
	var removed []string
	for _, r := range rs {
		if r == e.flags.region {
			continue
		}
		st, err := e.partition(c, r, false)
		if err == nil {
			err = st.Delete(e.ctx, key)
		}
		if err != nil && !errors.Is(err, lookup.ErrNotFound) {
			return fmt.Errorf("removing the claim of %s: %w", r, err)
		}
		removed = append(removed, r)
	}
	slog.New(slog.NewJSONHandler(e.stderr, nil)).Warn("audit", "event", "lookup.conflict_resolved", "topology", "mesh",
		"key", key.String(), "kept", e.flags.region, "removed", removed)
	fmt.Fprintf(e.stdout, "resolved: %s now lives in %s (removed the claim of %s)\n", key, e.flags.region, strings.Join(removed, ","))
	return nil
}
