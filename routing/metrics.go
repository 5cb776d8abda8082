package routing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// siteName is the site label of an upstream attempt: the region's primary
// or its DR site (a closed set).
func siteName(i int) string {
	if i == 0 {
		return "primary"
	}
	return "dr"
}

// registerUpstreamMetrics registers the per-upstream operator metrics:
// meridian.routing.upstream.calls{region,site,result} (primary vs DR
// routing, ok|error) and the gauge meridian.routing.breaker.open{region,site}
// (1 while the breaker rejects calls). Regions come from the configuration.
func (rt *Router) registerUpstreamMetrics(meter metric.Meter) error {
	c, err := meter.Int64Counter("meridian.routing.upstream.calls",
		metric.WithDescription("proxied call attempts by owning region, site (primary|dr) and result (ok|error)"))
	if err != nil {
		return err
	}
	rt.calls = c
	_, err = meter.Int64ObservableGauge("meridian.routing.breaker.open",
		metric.WithDescription("1 while the circuit breaker of an upstream site rejects calls"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			now := rt.now()
			for _, up := range rt.ups {
				for i, addr := range []string{up.Addr, up.DRAddr} {
					b := up.breakers[addr]
					if addr == "" || b == nil {
						continue
					}
					v := int64(0)
					if b.open(now) {
						v = 1
					}
					o.Observe(v, metric.WithAttributes(attribute.String("region", up.Region), attribute.String("site", siteName(i))))
				}
			}
			return nil
		}))
	return err
}

// countCall counts one attempt at site i of up.
func (rt *Router) countCall(ctx context.Context, up *upstream, i int, err error) {
	if rt.calls == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	rt.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("region", up.Region),
		attribute.String("site", siteName(i)), attribute.String("result", result)))
}
