package region

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Audit event names. Each security-relevant decision emits exactly one
// record (a JSON log line with msg "audit", the event, the region and the
// request's trace id) and increments meridian_audit_events_total{event}.
// Attributes never carry a password, code, token or TOTP value.
const (
	AuditLoginSucceeded = "login.succeeded"
	AuditLoginFailed    = "login.failed"
	AuditLockout        = "login.locked_out"
	AuditMFAFailed      = "mfa.failed"
	AuditConsent        = "consent.decision"
	AuditRegistration   = "client.registered"
	AuditAdminChange    = "admin.change"
)

// auditor writes audit events; the zero of its meter is a no-op.
type auditor struct {
	log    *slog.Logger
	region string
	events metric.Int64Counter
}

func newAuditor(log *slog.Logger, region string, m metric.Meter) *auditor {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	c, err := m.Int64Counter("meridian_audit_events", metric.WithDescription("Security audit events by event name."))
	if err != nil {
		c, _ = noop.NewMeterProvider().Meter("").Int64Counter("")
	}
	return &auditor{log: log, region: region, events: c}
}

// record emits one audit event with attrs (never secrets).
func (a *auditor) record(ctx context.Context, event string, attrs ...slog.Attr) {
	a.events.Add(ctx, 1, metric.WithAttributes(attribute.String("event", event)))
	attrs = append([]slog.Attr{slog.String("event", event), slog.String("region", a.region)}, attrs...)
	a.log.LogAttrs(ctx, slog.LevelInfo, "audit", attrs...)
}

// AuditSCIMWrite is the event of every SCIM write (create, replace, patch,
// delete of a user or group), with the action, resource type, resource id
// and client id.
const AuditSCIMWrite = "scim.write"

// Auditor emits audit events for handlers outside this package (the SCIM
// endpoint): the same JSON record and meridian_audit_events counter as the
// provider's own events.
type Auditor struct{ a *auditor }

// NewAuditor returns an auditor for region; m may be nil (no counter).
func NewAuditor(log *slog.Logger, region string, m metric.Meter) *Auditor {
	return &Auditor{a: newAuditor(log, region, m)}
}

// Record emits one audit event; attrs must not carry secrets.
func (a *Auditor) Record(ctx context.Context, event string, attrs ...slog.Attr) {
	a.a.record(ctx, event, attrs...)
}
