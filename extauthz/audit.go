package extauthz

import (
	"context"
	"log/slog"

	"github.com/meshwaf/meshwaf/inspector"
)

// MaxAuditPath is the number of bytes of the request target kept in an
// audit line.
const MaxAuditPath = 512

// audit writes one JSON line per check that matched a rule or was denied,
// or per check when all is set. Request bodies and header values are never
// logged; matched data is cut by the inspector.
func audit(ctx context.Context, l *slog.Logger, all bool, req *inspector.Request, v inspector.Verdict) {
	if l == nil || (!all && len(v.Matches) == 0 && v.Decision == inspector.Allow) {
		return
	}
	l.LogAttrs(ctx, slog.LevelInfo, "check",
		slog.String("log_type", "audit"),
		slog.String("request_id", req.ID),
		slog.Group("source", slog.String("principal", req.Source.Principal), slog.String("address", req.Source.Address), slog.Int("port", req.Source.Port)),
		slog.Group("destination", slog.String("principal", req.Destination.Principal), slog.String("address", req.Destination.Address), slog.Int("port", req.Destination.Port)),
		slog.String("method", req.Method),
		slog.String("host", req.Host),
		slog.String("path", inspector.Truncate(req.URI, MaxAuditPath)),
		slog.String("decision", string(v.Decision)),
		slog.Int("status", v.Status),
		slog.Int("anomaly_score", v.AnomalyScore),
		slog.String("profile", v.Profile),
		slog.Int("interrupting_rule", v.InterruptingRule),
		slog.Any("rules", auditRules(v.Matches)),
	)
}

type auditRule struct {
	ID       int      `json:"id"`
	Msg      string   `json:"msg"`
	Data     string   `json:"data,omitempty"`
	Severity string   `json:"severity,omitempty"`
	Tags     []string `json:"tags,omitempty"`
}

func auditRules(ms []inspector.Match) []auditRule {
	out := make([]auditRule, len(ms))
	for i, m := range ms {
		out[i] = auditRule(m)
	}
	return out
}
