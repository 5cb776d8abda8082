// Package telemetry wires OpenTelemetry traces and metrics and the slog
// logger for Meridian's binaries. Traces are exported over OTLP/HTTP when an
// endpoint is configured and not at all otherwise (W3C trace context is still
// propagated, so a router hop and its upstream share a trace); metrics are
// exposed for Prometheus on the admin listener; logs are JSON with the trace
// and span id of the request that wrote them.
package telemetry

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config selects exporters.
type Config struct {
	Service      string // e.g. "meridian-regional"
	Instance     string // e.g. the region id
	OTLPEndpoint string // host:port of an OTLP/HTTP collector; empty: no trace export
	LogLevel     string // debug, info, warn, error
}

// Telemetry holds the providers of one process. It is passed explicitly;
// nothing is installed globally.
type Telemetry struct {
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
	Log        *slog.Logger
	registry   *prometheus.Registry
	noSpans    bool // New without an exporter: no span is ever recorded
	shutdown   []func(context.Context) error
}

// New builds the providers. Call Shutdown to flush exporters.
func New(ctx context.Context, cfg Config, logOut io.Writer) (*Telemetry, error) {
	res := resource.NewSchemaless(semconv.ServiceName(cfg.Service), semconv.ServiceInstanceID(cfg.Instance))
	t := &Telemetry{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:   prometheus.NewRegistry(),
	}
	// Without an exporter nothing would read the spans: record none (they
	// still propagate W3C trace context, so a downstream collector-equipped
	// hop keeps the trace), and save the per-request span cost.
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample()))}
	if cfg.OTLPEndpoint != "" {
		topts[1] = sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(cfg.OTLPEndpoint), otlptracehttp.WithInsecure())
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(exp))
	} else {
		t.noSpans = true
	}
	tp := sdktrace.NewTracerProvider(topts...)
	t.Tracer = tp
	t.shutdown = append(t.shutdown, tp.Shutdown)

	exp, err := promexporter.New(promexporter.WithRegisterer(t.registry))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "http.server.*"},
			sdkmetric.Stream{AttributeFilter: attribute.NewAllowKeysFilter(ServerMetricKeys...)})))
	t.Meter = mp
	t.shutdown = append(t.shutdown, mp.Shutdown)

	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	t.Log = slog.New(traceHandler{slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level})}).
		With("service", cfg.Service, "instance", cfg.Instance)
	return t, nil
}

// AsDefault makes t.Log the process's default slog logger, and the log
// package's output, until the returned function restores both. Some
// libraries log only there (zitadel/oidc's op: its WithLogger option does
// nothing), and a serving process's stderr must stay one JSON object per
// line, with the service and instance, for the operator's log pipeline.
func (t *Telemetry) AsDefault() (restore func()) {
	prev, out, flags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(t.Log)
	return func() {
		slog.SetDefault(prev)
		log.SetOutput(out)
		log.SetFlags(flags)
	}
}

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Recording reports whether spans are recorded (an OTLP endpoint is
// configured). Without it a handler may skip Handler's middleware on a hot
// path: it would only propagate the trace context, which a proxy forwards
// as it arrived.
func (t *Telemetry) Recording() bool { return !t.noSpans }

// MetricsHandler serves the Prometheus scrape endpoint.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// ServerMetricKeys are the only attributes HTTP server metrics carry, each
// from a closed set: the method (unknown ones become _OTHER), scheme,
// protocol version, status code, route pattern (one of the routes given to
// Handler, else "other") and what the router added (region and outcome; see
// routing). Everything the client chooses freely, the Host header above
// all (server.address, server.port), is dropped, so no request can add a
// metric series.
var ServerMetricKeys = []attribute.Key{
	"http.request.method", "url.scheme", "network.protocol.version", "http.response.status_code", "http.route",
	"meridian.region", "meridian.routing",
}

// Handler wraps a server handler with spans, W3C propagation and HTTP
// metrics; operation names the server in span names. routes, when given,
// are the paths reported as http.route (an entry ending in "/" matches
// every path under it); any other path is reported as "other".
func (t *Telemetry) Handler(h http.Handler, operation string, routes ...string) http.Handler {
	if len(routes) > 0 {
		h = routeLabel(h, routes)
	}
	return otelhttp.NewHandler(h, operation,
		otelhttp.WithTracerProvider(t.Tracer), otelhttp.WithMeterProvider(t.Meter), otelhttp.WithPropagators(t.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }))
}

// routeLabel labels the request's metrics with its route from a closed set.
func routeLabel(h http.Handler, routes []string) http.Handler {
	exact := map[string]attribute.KeyValue{}
	var prefixes []string
	for _, r := range routes {
		exact[r] = attribute.String("http.route", r)
		if strings.HasSuffix(r, "/") && r != "/" {
			prefixes = append(prefixes, r)
		}
	}
	other := attribute.String("http.route", "other")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l, ok := otelhttp.LabelerFromContext(r.Context()); ok {
			kv, found := exact[r.URL.Path]
			if !found {
				kv = other
				for _, p := range prefixes {
					if strings.HasPrefix(r.URL.Path, p) {
						kv = exact[p]
						break
					}
				}
			}
			l.Add(kv)
		}
		h.ServeHTTP(w, r)
	})
}

// Transport wraps a client transport so outgoing calls carry the trace.
// Without a trace exporter no span would be recorded, so the calls only
// carry the W3C trace context (and baggage) of the request that made them,
// without otelhttp's per-call span and client metrics.
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	if t.noSpans {
		return propagating{base: base, prop: t.Propagator}
	}
	return otelhttp.NewTransport(base, otelhttp.WithTracerProvider(t.Tracer), otelhttp.WithMeterProvider(t.Meter), otelhttp.WithPropagators(t.Propagator))
}

// propagating injects the caller's trace context into outgoing calls.
type propagating struct {
	base http.RoundTripper
	prop propagation.TextMapPropagator
}

func (p propagating) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return p.base.RoundTrip(r) // nothing to carry
	}
	r = r.Clone(ctx) // a RoundTripper must not modify its request
	p.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
	return p.base.RoundTrip(r)
}

// traceHandler adds trace_id and span_id of the context's span to records.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(a)}
}
func (h traceHandler) WithGroup(n string) slog.Handler { return traceHandler{h.Handler.WithGroup(n)} }
