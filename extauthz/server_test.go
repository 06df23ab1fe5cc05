package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

// syncBuffer is a bytes.Buffer safe for concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

type testServer struct {
	*Server
	reg   *prometheus.Registry
	audit *syncBuffer
	logs  *syncBuffer
}

func newTestServer(t *testing.T, eng Inspector, mutate func(*Options)) *testServer {
	t.Helper()
	ts := &testServer{reg: prometheus.NewRegistry(), audit: &syncBuffer{}, logs: &syncBuffer{}}
	sel, err := NewSelector("", []string{inspector.DefaultProfileName, "watch"}, nil)
	require.NoError(t, err)
	opts := Options{
		Engine:     eng,
		Selector:   sel,
		Logger:     slog.New(slog.NewJSONHandler(ts.logs, nil)),
		Audit:      slog.New(slog.NewJSONHandler(ts.audit, nil)),
		Registerer: ts.reg,
	}
	if mutate != nil {
		mutate(&opts)
	}
	s, err := NewServer(opts)
	require.NoError(t, err)
	ts.Server = s
	return ts
}

// faultyInspector injects failures the real engine cannot be made to show.
type faultyInspector struct {
	panicWith any
	err       error
}

func (f faultyInspector) Inspect(context.Context, inspector.Request, string) (inspector.Verdict, error) {
	if f.panicWith != nil {
		panic(f.panicWith)
	}
	return inspector.Verdict{}, f.err
}

func TestCheckWithCRS(t *testing.T) {
	ts := newTestServer(t, testEngine(t), nil)
	ctx := context.Background()

	deny, err := ts.Check(ctx, loadCheckRequest(t, "http11.json"))
	require.NoError(t, err)
	require.EqualValues(t, 7, deny.GetStatus().GetCode())
	require.EqualValues(t, 403, deny.GetDeniedResponse().GetStatus().GetCode())
	meta := deny.GetDynamicMetadata().AsMap()
	require.Equal(t, "deny", meta[MetaDecision])
	require.Equal(t, "default", meta[MetaProfile], "unknown profile names fall back to the default")
	require.Contains(t, meta[MetaRuleIDs], "942190")
	require.GreaterOrEqual(t, meta[MetaAnomalyScore], 5.0)

	allow, err := ts.Check(ctx, loadCheckRequest(t, "http2.json"))
	require.NoError(t, err)
	require.EqualValues(t, 0, allow.GetStatus().GetCode())
	require.Equal(t, "allow", allow.GetDynamicMetadata().AsMap()[MetaDecision])

	partial, err := ts.Check(ctx, loadCheckRequest(t, "partial_body.json"))
	require.NoError(t, err)
	require.Equal(t, "deny", partial.GetDynamicMetadata().AsMap()[MetaDecision])
	require.Contains(t, partial.GetDynamicMetadata().AsMap()[MetaRuleIDs], "99002")

	tcp, err := ts.Check(ctx, loadCheckRequest(t, "tcp.json"))
	require.NoError(t, err)
	require.EqualValues(t, 0, tcp.GetStatus().GetCode())

	// The detect profile, chosen per route by a context extension.
	cr := loadCheckRequest(t, "http11.json")
	cr.Attributes.ContextExtensions[ContextKeyProfile] = "watch"
	detect, err := ts.Check(ctx, cr)
	require.NoError(t, err)
	require.EqualValues(t, 0, detect.GetStatus().GetCode())
	require.Equal(t, "detect", detect.GetDynamicMetadata().AsMap()[MetaDecision])
	require.Equal(t, "watch", detect.GetDynamicMetadata().AsMap()[MetaProfile])

	require.Equal(t, 2.0, testutil.ToFloat64(ts.metrics.checks.WithLabelValues("deny", "default")))
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.checks.WithLabelValues("allow", "default")))
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.checks.WithLabelValues("detect", "watch")))
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.networkChecks))
	require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.inFlight))
}

func TestCheckFailurePolicy(t *testing.T) {
	tests := []struct {
		name       string
		insp       faultyInspector
		failOpen   bool
		reason     string
		wantCode   int32
		wantStatus int
	}{
		{name: "panic fails closed", insp: faultyInspector{panicWith: "boom"}, reason: reasonPanic, wantCode: 7, wantStatus: 403},
		{name: "panic fails open", insp: faultyInspector{panicWith: errors.New("boom")}, failOpen: true, reason: reasonPanic},
		{name: "error fails closed", insp: faultyInspector{err: errors.New("engine broke")}, reason: reasonInspect, wantCode: 7, wantStatus: 403},
		{name: "canceled", insp: faultyInspector{err: inspector.ErrCanceled}, reason: reasonCanceled, wantCode: 7, wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.insp, func(o *Options) { o.FailOpen = tt.failOpen })
			resp, err := ts.Check(context.Background(), loadCheckRequest(t, "http2.json"))
			require.NoError(t, err, "a failure is answered, never returned as a gRPC error")
			require.Equal(t, tt.wantCode, resp.GetStatus().GetCode())
			if tt.wantStatus != 0 {
				require.EqualValues(t, tt.wantStatus, resp.GetDeniedResponse().GetStatus().GetCode())
			} else {
				require.NotNil(t, resp.GetOkResponse())
			}
			require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.errors.WithLabelValues(tt.reason)))
			require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.inFlight), "in-flight gauge is restored after a panic")
			if tt.insp.panicWith != nil {
				require.Contains(t, strings.Join(ts.logs.lines(), "\n"), "panic in check")
			}
		})
	}
}

func TestAuditLog(t *testing.T) {
	ts := newTestServer(t, testEngine(t), nil)
	ctx := context.Background()
	_, err := ts.Check(ctx, loadCheckRequest(t, "http2.json")) // clean: no line
	require.NoError(t, err)
	require.Equal(t, []string{""}, ts.audit.lines())

	_, err = ts.Check(ctx, loadCheckRequest(t, "http11.json"))
	require.NoError(t, err)
	lines := ts.audit.lines()
	require.Len(t, lines, 1)
	var line struct {
		LogType     string `json:"log_type"`
		RequestID   string `json:"request_id"`
		Decision    string `json:"decision"`
		Method      string `json:"method"`
		Path        string `json:"path"`
		Host        string `json:"host"`
		Score       int    `json:"anomaly_score"`
		Source      map[string]any
		Destination map[string]any
		Rules       []struct {
			ID  int    `json:"id"`
			Msg string `json:"msg"`
		} `json:"rules"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
	require.Equal(t, "audit", line.LogType)
	require.Equal(t, "8f1c2e8a-1111-4a5b-9c3d-000000000001", line.RequestID)
	require.Equal(t, "deny", line.Decision)
	require.Equal(t, "GET", line.Method)
	require.Equal(t, "/?username=[redacted 17 bytes]&password=[redacted 48 bytes]", line.Path, "query values are masked")
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/www", line.Source["principal"])
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/db", line.Destination["principal"])
	require.Equal(t, "10.0.0.9", line.Destination["address"])
	require.GreaterOrEqual(t, line.Score, 5)
	require.NotEmpty(t, line.Rules)
	require.NotContains(t, lines[0], "curl/8.5.0", "header values are not logged")

	// Long paths are capped.
	cr := loadCheckRequest(t, "http11.json")
	cr.Attributes.Request.Http.Path = seedSQLiPath + "&pad=" + strings.Repeat("a", 4*MaxAuditPath)
	_, err = ts.Check(ctx, cr)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(ts.audit.lines()[1]), &line))
	require.LessOrEqual(t, len(line.Path), MaxAuditPath+len("…"))
}

func TestAuditAll(t *testing.T) {
	ts := newTestServer(t, testEngine(t), func(o *Options) { o.AuditAll = true })
	_, err := ts.Check(context.Background(), loadCheckRequest(t, "http2.json"))
	require.NoError(t, err)
	require.Len(t, ts.audit.lines(), 1)
	require.Contains(t, ts.audit.lines()[0], `"decision":"allow"`)
}

// TestPrometheusMetrics gathers everything the server registers, lints the
// names and checks that no label carries unbounded values.
func TestPrometheusMetrics(t *testing.T) {
	ts := newTestServer(t, testEngine(t), nil)
	for _, f := range []string{"http11.json", "http2.json", "tcp.json"} {
		_, err := ts.Check(context.Background(), loadCheckRequest(t, f))
		require.NoError(t, err)
	}
	families, err := ts.reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range families {
		names[mf.GetName()] = true
		require.True(t, strings.HasPrefix(mf.GetName(), "meshwaf_"), mf.GetName())
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				require.NotContains(t, v, "/", "%s{%s=%q}: no paths in labels", mf.GetName(), lp.GetName(), v)
				require.NotContains(t, v, ".", "%s{%s=%q}: no addresses in labels", mf.GetName(), lp.GetName(), v)
				require.NotContains(t, v, "-", "%s{%s=%q}: no request ids in labels", mf.GetName(), lp.GetName(), v)
			}
		}
	}
	for _, want := range []string{"meshwaf_checks_total", "meshwaf_check_duration_seconds", "meshwaf_rule_matches_total",
		"meshwaf_anomaly_score", "meshwaf_check_errors_total", "meshwaf_network_checks_total", "meshwaf_checks_in_flight",
		"meshwaf_checks_rejected_total", "meshwaf_check_body_bytes_in_flight",
		"meshwaf_preselect_rules_evaluated", "meshwaf_preselect_rules_total", "meshwaf_preselect_rules_removed_total"} {
		require.True(t, names[want], "missing %s", want)
	}
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.ruleMatches.WithLabelValues("942190")))
	// Two HTTP checks on the default profile: pre-selection removed rules
	// from both, and never more than the profile has.
	total := testutil.ToFloat64(ts.metrics.rulesTotal.WithLabelValues(inspector.DefaultProfileName))
	removed := testutil.ToFloat64(ts.metrics.rulesRemoved.WithLabelValues(inspector.DefaultProfileName))
	require.Positive(t, removed, "rule pre-selection removed nothing")
	require.Less(t, removed, total)

	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
}

func TestNewServerRequiresDependencies(t *testing.T) {
	_, err := NewServer(Options{})
	require.Error(t, err)
	reg := prometheus.NewRegistry()
	opts := Options{Engine: faultyInspector{}, Logger: slog.Default(), Registerer: reg}
	_, err = NewServer(opts)
	require.NoError(t, err)
	_, err = NewServer(opts)
	require.Error(t, err, "registering twice on one registry is refused")
}

// TestCheckPanicBeforeInspection: a panic in the early part of a check
// (here the clock, read before admission) is answered by the failure
// policy like one in the inspection, and the gauges are restored.
func TestCheckPanicBeforeInspection(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		ts := newTestServer(t, faultyInspector{}, func(o *Options) {
			o.FailOpen = failOpen
			o.Now = func() time.Time { panic("clock broke") }
		})
		resp, err := ts.Check(context.Background(), loadCheckRequest(t, "http2.json"))
		require.NoError(t, err)
		if failOpen {
			require.EqualValues(t, 0, resp.GetStatus().GetCode())
			require.NotNil(t, resp.GetOkResponse())
		} else {
			require.EqualValues(t, 7, resp.GetStatus().GetCode())
			require.EqualValues(t, 403, resp.GetDeniedResponse().GetStatus().GetCode())
			require.Contains(t, resp.GetDeniedResponse().GetBody(), "could not be inspected")
		}
		require.Equal(t, inspector.DefaultProfileName, resp.GetDynamicMetadata().AsMap()[MetaProfile])
		require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.errors.WithLabelValues(reasonPanic)))
		require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.inFlight))
		require.Contains(t, strings.Join(ts.logs.lines(), "\n"), "panic in check")
	}
}

// TestPreselectCanaryMetrics: with preselectCanary 1 every check also runs
// every rule; the canary checks are counted and, rule pre-selection being
// sound, no disagreement is; a disagreement is logged with its rule ids.
func TestPreselectCanaryMetrics(t *testing.T) {
	rs, err := inspector.Compile(inspector.Profile{PreselectCanary: 1}, inspector.Profile{Name: "watch", Mode: inspector.ModeDetect})
	require.NoError(t, err)
	ts := newTestServer(t, rs, nil)
	for _, f := range []string{"http11.json", "http2.json"} {
		_, err := ts.Check(context.Background(), loadCheckRequest(t, f))
		require.NoError(t, err)
	}
	p := inspector.DefaultProfileName
	require.Equal(t, 2.0, testutil.ToFloat64(ts.metrics.canaryChecks.WithLabelValues(p)))
	require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.disagreements.WithLabelValues(p)))
	require.NotContains(t, strings.Join(ts.logs.lines(), "\n"), "disagreed")

	// A disagreement (which a sound pre-selection never produces) is
	// counted and logged with the rule ids.
	ts = newTestServer(t, disagreeing{}, nil)
	_, err = ts.Check(context.Background(), loadCheckRequest(t, "http11.json"))
	require.NoError(t, err)
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.disagreements.WithLabelValues(p)))
	logs := strings.Join(ts.logs.lines(), "\n")
	require.Contains(t, logs, "disagreed")
	require.Contains(t, logs, "942100")
}

// disagreeing answers like a canary check that found a disagreement.
type disagreeing struct{}

func (disagreeing) Inspect(context.Context, inspector.Request, string) (inspector.Verdict, error) {
	return inspector.Verdict{Decision: inspector.Allow, Profile: inspector.DefaultProfileName,
		Preselect: inspector.PreselectStats{Rules: 10, Candidates: 6, Removed: 5, Canary: true, Disagreement: []int{942100}}}, nil
}
