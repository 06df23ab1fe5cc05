package extauthz

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwaf/meshwaf/inspector"
)

// Error reasons, the values of the reason label of meshwaf_check_errors_total.
const (
	reasonPanic    = "panic"
	reasonInspect  = "inspect"
	reasonCanceled = "canceled"
)

// metrics holds the collectors of one Server. Labels are bounded: decisions
// and reasons are fixed sets, profiles are configured and rule ids come from
// the compiled rule set.
type metrics struct {
	checks        *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	ruleMatches   *prometheus.CounterVec
	anomalyScore  *prometheus.HistogramVec
	errors        *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	networkChecks prometheus.Counter
	inFlight      prometheus.Gauge
	lenient       prometheus.Counter
	// Rule pre-selection (inspector/internal/preselect), per profile.
	rulesEvaluated *prometheus.HistogramVec
	rulesTotal     *prometheus.CounterVec
	rulesRemoved   *prometheus.CounterVec
	canaryChecks   *prometheus.CounterVec
	disagreements  *prometheus.CounterVec
	// Values the decoded views left undecoded (inspector.UndecodedViews).
	undecoded *prometheus.CounterVec
}

// Values of the bound label of meshwaf_undecoded_values_total.
const (
	boundValue  = "value"  // longer than the per-value decoding limit
	boundBudget = "budget" // past a phase's budget of views
	boundDepth  = "depth"  // still encoded at the nesting limit of views
)

func newMetrics(reg prometheus.Registerer, adm *admission) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_checks_total",
			Help: "HTTP checks answered, by decision (allow, deny, detect) and profile.",
		}, []string{"decision", "profile"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshwaf_check_duration_seconds",
			Help:    "Time to answer one HTTP check, inspection included.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"profile"}),
		ruleMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_rule_matches_total",
			Help: "Matches of logging rules, by rule id.",
		}, []string{"rule_id"}),
		anomalyScore: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshwaf_anomaly_score",
			Help:    "CRS inbound anomaly score of each HTTP check.",
			Buckets: []float64{0, 2, 3, 5, 8, 10, 15, 20, 30, 50},
		}, []string{"profile"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_check_errors_total",
			Help: "Checks answered by the failure policy, by reason (panic, inspect, canceled).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_checks_rejected_total",
			Help: "Checks answered by the failure policy because the admission limits were reached, by reason (inflight, body_bytes).",
		}, []string{"reason"}),
		networkChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshwaf_network_checks_total",
			Help: "Checks without an HTTP request (network-level ext_authz), answered OK.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshwaf_checks_in_flight",
			Help: "Checks being answered now.",
		}),
		lenient: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshwaf_lenient_decodes_total",
			Help: "CheckRequests that carried invalid UTF-8 in string fields and were decoded leniently.",
		}),
		rulesEvaluated: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshwaf_preselect_rules_evaluated",
			Help:    "Rules of the request phases left to Coraza per check after rule pre-selection.",
			Buckets: []float64{25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000},
		}, []string{"profile"}),
		rulesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_preselect_rules_total",
			Help: "Rules of the request phases, summed over checks (the share removed is meshwaf_preselect_rules_removed_total over this).",
		}, []string{"profile"}),
		rulesRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_preselect_rules_removed_total",
			Help: "Rules rule pre-selection proved unable to match and removed, summed over checks.",
		}, []string{"profile"}),
		canaryChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_preselect_canary_checks_total",
			Help: "Checks that also ran every rule (the profile's preselectCanary sample).",
		}, []string{"profile"}),
		disagreements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_preselect_disagreements_total",
			Help: "Canary checks whose full evaluation disagreed with pre-selection (the full verdict was used); any is a defect to report.",
		}, []string{"profile"}),
		undecoded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_undecoded_values_total",
			Help: "Encoded values left without decoded views by a bound (value: over 64 KiB; budget: past a phase's 256 KiB of views; depth: still encoded after 2 nested decodings), by profile; rule 99004 denied them unless the profile sets allowUndecodedViews.",
		}, []string{"profile", "bound"}),
	}
	bodyBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshwaf_check_body_bytes_in_flight",
		Help: "Request body bytes of the inspections running now (bounded by the admission limits).",
	}, func() float64 { return float64(adm.bodyBytes()) })
	for _, c := range []prometheus.Collector{m.checks, m.duration, m.ruleMatches, m.anomalyScore, m.errors, m.rejected, m.networkChecks, m.inFlight, m.lenient,
		m.rulesEvaluated, m.rulesTotal, m.rulesRemoved, m.canaryChecks, m.disagreements, m.undecoded, bodyBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, d := range []inspector.Decision{inspector.Allow, inspector.Deny, inspector.Detect} {
		m.checks.WithLabelValues(string(d), inspector.DefaultProfileName)
	}
	m.canaryChecks.WithLabelValues(inspector.DefaultProfileName)
	m.disagreements.WithLabelValues(inspector.DefaultProfileName)
	for _, b := range []string{boundValue, boundBudget, boundDepth} {
		m.undecoded.WithLabelValues(inspector.DefaultProfileName, b)
	}
	for _, r := range []string{reasonPanic, reasonInspect, reasonCanceled} {
		m.errors.WithLabelValues(r)
	}
	for _, r := range []string{RejectInFlight, RejectBodyBytes, RejectStreams} {
		m.rejected.WithLabelValues(r)
	}
	return m, nil
}

func (m *metrics) observe(v inspector.Verdict, seconds float64) {
	m.checks.WithLabelValues(string(v.Decision), v.Profile).Inc()
	m.duration.WithLabelValues(v.Profile).Observe(seconds)
	m.anomalyScore.WithLabelValues(v.Profile).Observe(float64(v.AnomalyScore))
	for _, id := range v.RuleIDs() {
		m.ruleMatches.WithLabelValues(strconv.Itoa(id)).Inc()
	}
	if u := v.UndecodedViews; u.Any() {
		m.undecoded.WithLabelValues(v.Profile, boundValue).Add(float64(u.OverValueLimit))
		m.undecoded.WithLabelValues(v.Profile, boundBudget).Add(float64(u.OverBudget))
		m.undecoded.WithLabelValues(v.Profile, boundDepth).Add(float64(u.OverDepth))
	}
	if ps := v.Preselect; ps.Rules > 0 {
		m.rulesEvaluated.WithLabelValues(v.Profile).Observe(float64(ps.Rules - ps.Removed))
		m.rulesTotal.WithLabelValues(v.Profile).Add(float64(ps.Rules))
		m.rulesRemoved.WithLabelValues(v.Profile).Add(float64(ps.Removed))
		if ps.Canary {
			m.canaryChecks.WithLabelValues(v.Profile).Inc()
			if len(ps.Disagreement) > 0 {
				m.disagreements.WithLabelValues(v.Profile).Inc()
			}
		}
	}
}
