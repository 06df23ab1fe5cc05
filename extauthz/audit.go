package extauthz

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/meshwaf/meshwaf/inspector"
)

// MaxAuditPath is the number of bytes of the request target kept in an
// audit line.
const MaxAuditPath = 512

// audit writes one JSON line per check that matched a rule, was denied or
// left encoded values undecoded (undecoded_views, only then), or per check
// when o.AuditAll is set. Request bodies and header values
// are never logged. Unless o.AuditRawValues is set, query values and
// matched values are masked (redactTarget, redactData).
func audit(ctx context.Context, o *Options, req *inspector.Request, v inspector.Verdict) {
	if o.Audit == nil || (!o.AuditAll && len(v.Matches) == 0 && v.Decision == inspector.Allow && !v.UndecodedViews.Any()) {
		return
	}
	path := inspector.Truncate(req.URI, MaxAuditPath)
	if !o.AuditRawValues {
		path = redactTarget(req.URI)
	}
	attrs := []slog.Attr{
		slog.String("log_type", AuditLogType),
		slog.String("request_id", req.ID),
		slog.Group("source", slog.String("principal", req.Source.Principal), slog.String("address", req.Source.Address), slog.Int("port", req.Source.Port)),
		slog.Group("destination", slog.String("principal", req.Destination.Principal), slog.String("address", req.Destination.Address), slog.Int("port", req.Destination.Port)),
		slog.String("method", req.Method),
		slog.String("host", req.Host),
		slog.String("path", path),
		slog.String("decision", string(v.Decision)),
		slog.Int("status", v.Status),
		slog.Int("anomaly_score", v.AnomalyScore),
		slog.String("profile", v.Profile),
		slog.Int("interrupting_rule", v.InterruptingRule),
		slog.Any("rules", auditRules(v.Matches, o.AuditRawValues)),
	}
	if u := v.UndecodedViews; u.Any() {
		attrs = append(attrs, slog.Any("undecoded_views", AuditUndecoded(u)))
	}
	o.Audit.LogAttrs(ctx, slog.LevelInfo, "check", attrs...)
}

// AuditLine is one audit line as read back (meshwaf tune): the fields
// audit writes, with the same JSON names.
type AuditLine struct {
	Time             time.Time          `json:"time"`
	Level            string             `json:"level"`
	Msg              string             `json:"msg"`
	LogType          string             `json:"log_type"` // "audit"
	RequestID        string             `json:"request_id"`
	Source           AuditPeer          `json:"source"`
	Destination      AuditPeer          `json:"destination"`
	Method           string             `json:"method"`
	Host             string             `json:"host"`
	Path             string             `json:"path"` // see redactTarget
	Decision         inspector.Decision `json:"decision"`
	Status           int                `json:"status"`
	AnomalyScore     int                `json:"anomaly_score"`
	Profile          string             `json:"profile"`
	InterruptingRule int                `json:"interrupting_rule"`
	Rules            []AuditRule        `json:"rules"`
	// UndecodedViews is present when encoded values were left undecoded.
	UndecodedViews *AuditUndecoded `json:"undecoded_views,omitempty"`
}

// AuditUndecoded is inspector.UndecodedViews in an audit line: counts and
// lengths, never values.
type AuditUndecoded struct {
	OverValueLimit  int `json:"over_value_limit,omitempty"`
	Longest         int `json:"longest,omitempty"`
	OverBudget      int `json:"over_budget,omitempty"`
	BudgetViewBytes int `json:"budget_view_bytes,omitempty"`
	OverDepth       int `json:"over_depth,omitempty"`
}

// AuditLogType is AuditLine.LogType.
const AuditLogType = "audit"

// AuditPeer is the source or destination of an audit line.
type AuditPeer struct {
	Principal string `json:"principal"`
	Address   string `json:"address"`
	Port      int    `json:"port"`
}

// AuditRule is one matched rule of an audit line; Data is masked unless
// auditRawValues is set (redactData).
type AuditRule struct {
	ID       int      `json:"id"`
	Msg      string   `json:"msg"`
	Data     string   `json:"data,omitempty"`
	Severity string   `json:"severity,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// Targets are variable names (ARGS:comment), never values.
	Targets []string `json:"targets,omitempty"`
}

func auditRules(ms []inspector.Match, raw bool) []AuditRule {
	out := make([]AuditRule, len(ms))
	for i, m := range ms {
		out[i] = AuditRule(m)
		if !raw {
			out[i].Data = redactData(m.Data)
		}
	}
	return out
}

// mask stands for n bytes of a value that are not logged.
func mask(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "[redacted 1 byte]"
	}
	return "[redacted " + strconv.Itoa(n) + " bytes]"
}

// isMask reports whether s is what mask writes for some n > 0, so that
// redacting a redacted target changes nothing.
func isMask(s string) bool {
	n, ok := strings.CutPrefix(s, "[redacted ")
	if !ok {
		return false
	}
	if n == "1 byte]" {
		return true
	}
	n, ok = strings.CutSuffix(n, " bytes]")
	v, err := strconv.Atoi(n)
	return ok && err == nil && v > 1 && strconv.Itoa(v) == n
}

// RedactTarget is redactTarget for readers of audit lines: applied to a
// target logged with auditRawValues it masks the values, and applied to
// a masked target it returns it unchanged.
func RedactTarget(uri string) string { return redactTarget(uri) }

// redactTarget returns the request target as the audit line shows it, at
// most MaxAuditPath bytes (and "…"): the path as sent, but the value of
// every path parameter (";name=value") and query parameter
// ("name=value") replaced by mask; a query part without "=" is masked
// whole, as it may be a bare token. Parameters are split at '&' only, so
// "a=1;b=2" is one value. The work is bounded by MaxAuditPath, not by the
// length of the target. A value that is already a mask is kept.
func redactTarget(uri string) string {
	var b strings.Builder
	maskOf := func(v string) string {
		if isMask(v) {
			return v
		}
		return mask(len(v))
	}
	// write stops one byte after MaxAuditPath: enough for Truncate to see
	// that the target was cut.
	write := func(ss ...string) {
		for _, s := range ss {
			room := MaxAuditPath + 1 - b.Len()
			if room <= 0 {
				return
			}
			b.WriteString(s[:min(len(s), room)])
		}
	}
	path, query, hasQuery := strings.Cut(uri, "?")
	// Path parameters: the value runs from '=' to the next '/' or ';'.
	for len(path) > 0 && b.Len() <= MaxAuditPath {
		i := strings.IndexByte(path, ';')
		if i < 0 {
			write(path)
			break
		}
		write(path[:i+1])
		path = path[i+1:]
		end := strings.IndexAny(path, "/;")
		if end < 0 {
			end = len(path)
		}
		if name, value, ok := strings.Cut(path[:end], "="); ok {
			write(name, "=", maskOf(value))
		} else {
			write(path[:end])
		}
		path = path[end:]
	}
	if hasQuery {
		write("?")
	}
	for first := true; hasQuery && b.Len() <= MaxAuditPath; first = false {
		var part string
		part, query, hasQuery = strings.Cut(query, "&")
		if !first {
			write("&")
		}
		if name, value, ok := strings.Cut(part, "="); ok {
			write(name, "=", maskOf(value))
		} else {
			write(maskOf(part))
		}
	}
	return inspector.Truncate(b.String(), MaxAuditPath)
}

const (
	matchedData = "Matched Data: "
	foundWithin = " found within "
)

// redactData masks the values in a rule's matched data (Coraza's logdata,
// cut at inspector.MaxMatchData) and keeps what shows what matched where:
//
//   - "Matched Data: X found within VAR: VALUE" (CRS's format; X is the part
//     of VALUE the pattern matched) keeps X, VAR and the first occurrence of
//     X in VALUE, and masks the rest of VALUE;
//   - "Matched Data: VALUE found within VAR" keeps VAR and masks VALUE;
//   - "VAR=VALUE" keeps VAR and masks VALUE;
//   - anything else is masked whole.
//
// VAR is a known collection name with an optional ":key". Where the text
// is ambiguous (a key or X holding the separators), the reading that masks
// more is taken.
func redactData(d string) string {
	if d == "" {
		return ""
	}
	cut := ""
	if len(d) > inspector.MaxMatchData && strings.HasSuffix(d, "…") {
		d, cut = strings.TrimSuffix(d, "…"), "…" // cut by the inspector
	}
	if rest, ok := strings.CutPrefix(d, matchedData); ok {
		if r, ok := redactFoundWithin(rest); ok {
			return matchedData + r + cut
		}
		return matchedData + mask(len(rest)) + cut
	}
	if name, value, ok := cutVariable(d, "="); ok {
		return name + "=" + mask(len(value)) + cut
	}
	return mask(len(d)) + cut
}

// redactFoundWithin redacts "X found within VAR[: VALUE]" at the first
// " found within " that a variable name follows.
func redactFoundWithin(s string) (string, bool) {
	for off := 0; ; {
		i := strings.Index(s[off:], foundWithin)
		if i < 0 {
			return "", false
		}
		x, after := s[:off+i], s[off+i+len(foundWithin):]
		off += i + 1
		if name, value, ok := cutVariable(after, ": "); ok {
			return x + foundWithin + name + ": " + maskExcept(value, x), true
		}
		if isVariable(after) {
			return mask(len(x)) + foundWithin + after, true
		}
	}
}

// maskExcept masks value but for the first occurrence of keep.
func maskExcept(value, keep string) string {
	i := strings.Index(value, keep)
	if keep == "" || i < 0 {
		return mask(len(value))
	}
	return mask(i) + keep + mask(len(value)-i-len(keep))
}

// cutVariable splits s at the first sep after a variable name: a known
// collection and, after ':', a key that runs to the first sep.
func cutVariable(s, sep string) (name, value string, ok bool) {
	coll := collectionPrefix(s)
	if coll == "" {
		return "", "", false
	}
	rest := s[len(coll):]
	if v, ok := strings.CutPrefix(rest, sep); ok {
		return coll, v, true
	}
	if !strings.HasPrefix(rest, ":") {
		return "", "", false
	}
	i := strings.Index(rest, sep)
	if i < 0 {
		return "", "", false
	}
	return coll + rest[:i], rest[i+len(sep):], true
}

// isVariable reports whether s is a variable name: a known collection,
// alone or with ":key".
func isVariable(s string) bool {
	coll := collectionPrefix(s)
	return coll != "" && (len(s) == len(coll) || s[len(coll)] == ':')
}

// collectionPrefix returns the collection name that s starts with, or "".
func collectionPrefix(s string) string {
	i := 0
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] == '_') {
		i++
	}
	if auditCollections[s[:i]] {
		return s[:i]
	}
	return ""
}

// auditCollections are the request-side variables CRS reports matches in.
var auditCollections = map[string]bool{
	"ARGS": true, "ARGS_GET": true, "ARGS_POST": true, "ARGS_NAMES": true, "ARGS_GET_NAMES": true, "ARGS_POST_NAMES": true,
	"ARGS_COMBINED_SIZE": true, "QUERY_STRING": true, "REQUEST_BODY": true, "REQUEST_COOKIES": true, "REQUEST_COOKIES_NAMES": true,
	"REQUEST_HEADERS": true, "REQUEST_HEADERS_NAMES": true, "REQUEST_URI": true, "REQUEST_URI_RAW": true, "REQUEST_FILENAME": true,
	"REQUEST_BASENAME": true, "REQUEST_LINE": true, "REQUEST_METHOD": true, "REQUEST_PROTOCOL": true, "FILES": true,
	"FILES_NAMES": true, "FILES_SIZES": true, "FILES_COMBINED_SIZE": true, "MULTIPART_PART_HEADERS": true, "XML": true, "TX": true,
}
