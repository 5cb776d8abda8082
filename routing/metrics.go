package routing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// siteName is the site label of an upstream attempt: the region's primary
// or its DR site (a closed set).
func siteName(dr bool) string {
	if dr {
		return "dr"
	}
	return "primary"
}

// registerPeerMetrics registers the per-upstream operator metrics:
// meridian.routing.upstream.calls{region,site,result} (primary vs DR
// routing, ok|error) and the gauge meridian.routing.breaker.open{region,site}
// (1 while the breakers of all the site's addresses reject calls). Regions come from the configuration.
func (rt *Router) registerPeerMetrics(meter metric.Meter) error {
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
				for _, dr := range []bool{false, true} {
					// A site rejects calls when the breaker of every one
					// of its addresses is open.
					seen, open := false, true
					for _, at := range up.attempts {
						if at.dr == dr {
							seen = true
							open = open && up.breakers[at.addr].open(now)
						}
					}
					if !seen {
						continue
					}
					v := int64(0)
					if open {
						v = 1
					}
					o.Observe(v, metric.WithAttributes(attribute.String("region", up.Region), attribute.String("site", siteName(dr))))
				}
			}
			return nil
		}))
	return err
}

// countCall counts one attempt at a primary or DR address of up.
func (rt *Router) countCall(ctx context.Context, up *upstream, dr bool, err error) {
	if rt.calls == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	// One attribute set per (region, site, result), built once (all three
	// come from closed sets: configured regions, primary|dr, ok|error).
	k := callKey{up.Region, dr, err == nil}
	opt, ok := rt.callAttrs.Load(k)
	if !ok {
		opt, _ = rt.callAttrs.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(attribute.String("region", up.Region),
			attribute.String("site", siteName(dr)), attribute.String("result", result))))
	}
	rt.calls.Add(ctx, 1, opt.(metric.AddOption))
}

// callKey names one attribute set of the upstream calls counter.
type callKey struct {
	region string
	dr, ok bool
}
