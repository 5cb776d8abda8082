package geodns

import (
	"context"
	"sort"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// recMeter is a metric.Meter that records counter sums and can run the
// registered callbacks, so tests can check what the package reports
// without an SDK.
type recMeter struct {
	noop.Meter
	mu        sync.Mutex
	sums      map[string]int64
	callbacks []metric.Callback
}

func newRecMeter() *recMeter { return &recMeter{sums: map[string]int64{}} }

func attrKey(name string, s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

func (m *recMeter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return &recCounter{m: m, name: name}, nil
}

func (m *recMeter) Int64ObservableGauge(name string, _ ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	return &recGauge{name: name}, nil
}

func (m *recMeter) Int64ObservableCounter(name string, _ ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	return &recObservableCounter{name: name}, nil
}

func (m *recMeter) RegisterCallback(cb metric.Callback, _ ...metric.Observable) (metric.Registration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.callbacks = append(m.callbacks, cb)
	return noop.Registration{}, nil
}

// sum returns a counter's total for exactly these attributes, e.g.
// sum("geodns.queries{rcode=NOERROR,region=eu,transport=udp}").
func (m *recMeter) sum(key string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sums[key]
}

// observe runs the callbacks and returns the observed values (gauges and
// observable counters) by key.
func (m *recMeter) observe() map[string]int64 {
	m.mu.Lock()
	cbs := append([]metric.Callback(nil), m.callbacks...)
	m.mu.Unlock()
	o := &recObserver{out: map[string]int64{}}
	for _, cb := range cbs {
		_ = cb(context.Background(), o)
	}
	return o.out
}

type recCounter struct {
	noop.Int64Counter
	m    *recMeter
	name string
}

func (c *recCounter) Add(_ context.Context, v int64, opts ...metric.AddOption) {
	cfg := metric.NewAddConfig(opts)
	key := attrKey(c.name, cfg.Attributes())
	c.m.mu.Lock()
	c.m.sums[key] += v
	c.m.mu.Unlock()
}

type recGauge struct {
	noop.Int64ObservableGauge
	name string
}

type recObservableCounter struct {
	noop.Int64ObservableCounter
	name string
}

type recObserver struct {
	noop.Observer
	mu  sync.Mutex
	out map[string]int64
}

func (o *recObserver) ObserveInt64(obs metric.Int64Observable, v int64, opts ...metric.ObserveOption) {
	var name string
	switch i := obs.(type) {
	case *recGauge:
		name = i.name
	case *recObservableCounter:
		name = i.name
	default:
		return
	}
	cfg := metric.NewObserveConfig(opts)
	o.mu.Lock()
	o.out[attrKey(name, cfg.Attributes())] = v
	o.mu.Unlock()
}
