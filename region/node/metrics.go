package node

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/meridian-id/meridian/region"
)

// outboxScan bounds the outbox backlog a scrape counts: a larger backlog
// is reported as outboxScan (the operator needs "stuck", not the exact
// number).
const outboxScan = 10000

// registerMetrics registers the node's operator gauges (labels from closed
// sets):
//
//   - meridian.region.role{role=primary|standby|fenced}: 1 for the node's
//     current role, 0 for the others;
//   - meridian.region.outbox.backlog: user-table changes not yet
//     acknowledged by the hub (capped at outboxScan; primary only);
//   - meridian.db.pool.connections{state=total|idle|acquired} and
//     meridian.db.pool.max: the PostgreSQL pool (pgxpool.Stat), when the
//     store is PostgreSQL.
func (n *Node) registerMetrics(meter metric.Meter) error {
	roles := []region.Role{region.RolePrimary, region.RoleStandby, region.RoleFenced}
	if _, err := meter.Int64ObservableGauge("meridian.region.role",
		metric.WithDescription("1 for the node's current role (primary|standby|fenced)"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			cur := n.Role()
			for _, r := range roles {
				v := int64(0)
				if r == cur {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(attribute.String("role", r.String())))
			}
			return nil
		})); err != nil {
		return err
	}
	if _, err := meter.Int64ObservableGauge("meridian.region.outbox.backlog",
		metric.WithDescription("user-table changes not yet acknowledged by the hub (capped at 10000)"),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			if n.Role() != region.RolePrimary {
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			es, err := n.Store.PendingOutbox(ctx, outboxScan)
			if err != nil {
				return nil // a scrape does not fail on an unreachable database; /readyz says so
			}
			o.Observe(int64(len(es)))
			return nil
		})); err != nil {
		return err
	}
	ps, ok := n.Store.(interface{ PoolStat() *pgxpool.Stat })
	if !ok {
		return nil
	}
	if _, err := meter.Int64ObservableGauge("meridian.db.pool.connections",
		metric.WithDescription("PostgreSQL pool connections by state (total|idle|acquired)"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			st := ps.PoolStat()
			o.Observe(int64(st.TotalConns()), metric.WithAttributes(attribute.String("state", "total")))
			o.Observe(int64(st.IdleConns()), metric.WithAttributes(attribute.String("state", "idle")))
			o.Observe(int64(st.AcquiredConns()), metric.WithAttributes(attribute.String("state", "acquired")))
			return nil
		})); err != nil {
		return err
	}
	_, err := meter.Int64ObservableGauge("meridian.db.pool.max",
		metric.WithDescription("PostgreSQL pool size bound (pool_max_conns)"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(ps.PoolStat().MaxConns()))
			return nil
		}))
	return err
}
