package rollout

import (
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Querier answers instant PromQL queries (Prometheus's HTTP API, or a
// fake in tests).
type Querier interface {
	// Query evaluates query at ts. An answer with warnings (partial data)
	// is an error, never a smaller vector.
	Query(ctx context.Context, query string, ts time.Time) (model.Vector, error)
}

// MetricLabels name the target labels the Prometheus scrape config puts on
// the sidecars' series: Istio's sample config writes namespace and pod.
type MetricLabels struct {
	Namespace string
	Pod       string
}

// DefaultMetricLabels are those of Istio's sample Prometheus config.
func DefaultMetricLabels() MetricLabels { return MetricLabels{Namespace: "namespace", Pod: "pod"} }

// PromoteOptions tune Promote.
type PromoteOptions struct {
	// StableFor is how long every staged policy must have been in dry-run
	// and the shadow denials at zero.
	StableFor    time.Duration
	ServerDryRun bool
	Labels       MetricLabels
	// Now is the time of the queries; time.Now when nil.
	Now func() time.Time
}

// ShadowDenial is how many requests or connections the staged policies
// would have denied at one pod over the window.
type ShadowDenial struct {
	Namespace string  `json:"namespace"`
	Pod       string  `json:"pod"`
	Count     float64 `json:"count"`
}

// DeniedFlow is an observed flow the staged policies do not admit.
type DeniedFlow struct {
	// Source is the caller's principal, or "unknown" without mTLS.
	Source string `json:"source"`
	// Destination is the graph's ID of the destination workload, or
	// namespace/workload for one the graph does not name.
	Destination string  `json:"destination"`
	Count       float64 `json:"count"`
	// Metric is istio_requests_total or istio_tcp_connections_opened_total.
	Metric string `json:"metric"`
}

func (f DeniedFlow) String() string {
	return fmt.Sprintf("%s -> %s (%g, %s)", f.Source, f.Destination, f.Count, f.Metric)
}

// PromoteResult says what Promote did or why it refused.
type PromoteResult struct {
	Graph string `json:"graph"`
	// Staged are the graph's policies in dry-run, in promotion order.
	Staged []string `json:"staged"`
	// Promoted are those whose dry-run annotation was removed.
	Promoted []string `json:"promoted,omitempty"`
	// Refused says why nothing was promoted; empty when promoted.
	Refused  string         `json:"refused,omitempty"`
	Denials  []ShadowDenial `json:"shadowDenials,omitempty"`
	Flows    []DeniedFlow   `json:"deniedFlows,omitempty"`
	Queries  []string       `json:"queries"`
	Observed time.Time      `json:"observedAt"`
}

// ShadowDeniedSelector selects the RBAC shadow counters of dry-run ALLOW
// policies that count denials, in namespaces matching nsRegex.
//
// Istio documents dry-run results as Envoy RBAC statistics scraped by
// Prometheus, e.g. envoy_http_inbound_0_0_0_0_80_rbac{authz_dry_run_action="deny",
// authz_dry_run_result="denied"} ("Check dry-run result in metric using
// Prometheus", istio.io docs, tasks/security/authorization/authz-dry-run).
// The proxy's bootstrap extracts the tags authz_dry_run_action (allow|deny,
// from ".istio_dry_run_<action>_") and authz_dry_run_result
// (allowed|denied, from ".shadow_<result>") from Envoy's shadow_allowed
// and shadow_denied counters, so the name varies with the listener
// (http_inbound_<address>_<port>, tcp) and the tags do not. meshwaf stages
// only ALLOW policies, whose shadow denials are action "allow".
func ShadowDeniedSelector(l MetricLabels, nsRegex string) string {
	return fmt.Sprintf(`{__name__=~"envoy_.*rbac.*",authz_dry_run_action="allow",authz_dry_run_result="denied",%s=~%q}`, l.Namespace, nsRegex)
}

// shadowAnySelector selects every shadow counter: their presence shows
// the sidecars report dry-run statistics at all.
func shadowAnySelector(l MetricLabels, nsRegex string) string {
	return fmt.Sprintf(`{__name__=~"envoy_.*rbac.*",authz_dry_run_result!="",%s=~%q}`, l.Namespace, nsRegex)
}

// Promote removes istio.io/dry-run (and StagedAtAnnotation) from the
// graph's staged policies, ALLOW policies before the default-deny, when
// every one has been staged for StableFor and the sidecars of the graph's
// namespaces reported no shadow denial over the last StableFor. Otherwise
// it changes nothing and says why; with shadow denials it lists them and
// the observed flows (Istio's standard metrics, reporter="destination")
// the staged policies do not admit.
func Promote(ctx context.Context, c Client, q Querier, plan *meshpolicy.Plan, o PromoteOptions) (*PromoteResult, error) {
	if o.StableFor <= 0 {
		return nil, fmt.Errorf("stable-for %s: want a positive duration", o.StableFor)
	}
	if o.Labels == (MetricLabels{}) {
		o.Labels = DefaultMetricLabels()
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	graph := plan.Graph.Name
	res := &PromoteResult{Graph: graph, Observed: now.UTC()}
	owned, err := ListOwned(ctx, c, graph)
	if err != nil {
		return nil, err
	}
	var staged []*securityv1.AuthorizationPolicy
	for _, ap := range owned {
		if isDryRun(ap) {
			staged = append(staged, ap)
		}
	}
	sortApplyOrder(staged)
	for _, ap := range staged {
		res.Staged = append(res.Staged, ap.Namespace+"/"+ap.Name)
	}
	if len(staged) == 0 {
		res.Refused = fmt.Sprintf("graph %s has no policy in dry-run: apply --stage dry-run first", graph)
		return res, nil
	}
	if d := notTheGraphs(plan, owned); len(d) > 0 {
		res.Refused = "the cluster does not hold the graph's policies (apply --stage dry-run, which also restarts the wait): " + strings.Join(d, ", ")
		return res, nil
	}
	var young []string
	for _, ap := range staged {
		at, err := time.Parse(time.RFC3339, ap.Annotations[StagedAtAnnotation])
		switch {
		case err != nil:
			young = append(young, fmt.Sprintf("%s/%s (no valid %s: apply --stage dry-run stamps it)", ap.Namespace, ap.Name, StagedAtAnnotation))
		case now.Sub(at) < o.StableFor:
			young = append(young, fmt.Sprintf("%s/%s (staged %s ago)", ap.Namespace, ap.Name, now.Sub(at).Round(time.Second)))
		}
	}
	if len(young) > 0 {
		res.Refused = fmt.Sprintf("in dry-run for less than %s: %s", o.StableFor, strings.Join(young, ", "))
		return res, nil
	}

	nsRegex := namespacesRegex(staged)
	window := model.Duration(o.StableFor).String()
	query := func(q2 string) (model.Vector, error) {
		res.Queries = append(res.Queries, q2)
		v, err := q.Query(ctx, q2, now)
		if err != nil {
			return nil, fmt.Errorf("prometheus: %s: %w", q2, err)
		}
		return v, nil
	}
	present, err := query(fmt.Sprintf("count(count_over_time(%s[%s]))", shadowAnySelector(o.Labels, nsRegex), window))
	if err != nil {
		return nil, err
	}
	if len(present) == 0 || present[0].Value == 0 {
		res.Refused = fmt.Sprintf("no RBAC shadow counters from the sidecars of %s over the last %s: without them zero denials proves nothing "+
			"(are the sidecars scraped, with the %s and %s labels?)", nsRegex, window, o.Labels.Namespace, o.Labels.Pod)
		return res, nil
	}
	denials, err := query(fmt.Sprintf("sum by (%s, %s) (increase(%s[%s])) > 0", o.Labels.Namespace, o.Labels.Pod, ShadowDeniedSelector(o.Labels, nsRegex), window))
	if err != nil {
		return nil, err
	}
	var total float64
	for _, s := range denials {
		res.Denials = append(res.Denials, ShadowDenial{
			Namespace: string(s.Metric[model.LabelName(o.Labels.Namespace)]),
			Pod:       string(s.Metric[model.LabelName(o.Labels.Pod)]),
			Count:     round1(float64(s.Value)),
		})
		total += round1(float64(s.Value))
	}
	sort.Slice(res.Denials, func(i, j int) bool {
		a, b := res.Denials[i], res.Denials[j]
		return a.Namespace+"/"+a.Pod < b.Namespace+"/"+b.Pod
	})
	if total > 0 {
		res.Refused = fmt.Sprintf("%g shadow denials over the last %s: the staged policies would deny traffic", total, window)
		for _, metric := range []string{"istio_requests_total", "istio_tcp_connections_opened_total"} {
			v, err := query(fmt.Sprintf(`sum by (source_principal, destination_principal, destination_workload, destination_workload_namespace) `+
				`(increase(%s{reporter="destination",destination_workload_namespace=~%q}[%s])) > 0`, metric, nsRegex, window))
			if err != nil {
				return nil, err
			}
			res.Flows = append(res.Flows, deniedFlows(plan, v, metric)...)
		}
		return res, nil
	}

	var dryRun []string
	if o.ServerDryRun {
		dryRun = []string{metav1.DryRunAll}
	}
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null,%q:null}}}`, istio.DryRunAnnotation, StagedAtAnnotation)
	for _, ap := range staged {
		_, err := c.AuthorizationPolicies(ap.Namespace).Patch(ctx, ap.Name, types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRun})
		if err != nil {
			return res, fmt.Errorf("promoting AuthorizationPolicy %s/%s: %w", ap.Namespace, ap.Name, err)
		}
		res.Promoted = append(res.Promoted, ap.Namespace+"/"+ap.Name)
	}
	return res, nil
}

// notTheGraphs lists how the graph's objects in the cluster (owned)
// differ from what it generates: absent, edited (spec) or stale. Promoting
// them would enforce something other than the graph.
func notTheGraphs(plan *meshpolicy.Plan, owned []*securityv1.AuthorizationPolicy) []string {
	have := map[string]*securityv1.AuthorizationPolicy{}
	for _, ap := range owned {
		have[ap.Namespace+"/"+ap.Name] = ap
	}
	var out []string
	seen := map[string]bool{}
	for _, want := range Objects(plan, StageDryRun) {
		key := want.Namespace + "/" + want.Name
		seen[key] = true
		switch ap := have[key]; {
		case ap == nil:
			out = append(out, key+" absent")
		case !proto.Equal(&ap.Spec, &want.Spec):
			out = append(out, key+" edited")
		}
	}
	for _, ap := range owned {
		if key := ap.Namespace + "/" + ap.Name; !seen[key] {
			out = append(out, key+" no longer generated")
		}
	}
	return out
}

// namespacesRegex matches exactly the namespaces of policies.
func namespacesRegex(policies []*securityv1.AuthorizationPolicy) string {
	seen := map[string]bool{}
	var out []string
	for _, ap := range policies {
		if !seen[ap.Namespace] {
			seen[ap.Namespace] = true
			out = append(out, regexp.QuoteMeta(ap.Namespace))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "|")
}

// deniedFlows are the observed flows of v that plan does not admit: the
// source's principal has no grant on the destination workload (matched by
// its principal and namespace), or the destination is a workload of a
// default-deny namespace the graph does not name. The metrics carry no
// port, so a principal granted on any port of the destination counts as
// admitted.
func deniedFlows(plan *meshpolicy.Plan, v model.Vector, metric string) []DeniedFlow {
	covered := map[string]bool{}
	for _, ns := range plan.Namespaces {
		covered[ns] = true
	}
	var out []DeniedFlow
	for _, s := range v {
		src := strings.TrimPrefix(string(s.Metric["source_principal"]), "spiffe://")
		dst := strings.TrimPrefix(string(s.Metric["destination_principal"]), "spiffe://")
		ns := string(s.Metric["destination_workload_namespace"])
		workload := string(s.Metric["destination_workload"])
		if src == "" {
			src = "unknown"
		}
		// Workloads sharing a service account share a principal: the flow
		// is admitted when any of them grants the source.
		var ids []string
		admitted := false
		for _, d := range plan.Destinations {
			if d.Namespace == ns && d.Principal == dst {
				ids = append(ids, d.ID)
				admitted = admitted || granted(d, src)
			}
		}
		f := DeniedFlow{Source: src, Destination: ns + "/" + workload, Count: round1(float64(s.Value)), Metric: metric}
		switch {
		case len(ids) == 0 && covered[ns]:
			out = append(out, f)
		case len(ids) > 0 && !admitted:
			f.Destination = strings.Join(ids, "|")
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// round1 rounds to one decimal: increase() extrapolates to the window's
// edges, so a counter that rose by 3 reads 3.004.
func round1(v float64) float64 { return math.Round(v*10) / 10 }

func granted(d meshpolicy.Destination, principal string) bool {
	for _, p := range d.Ports {
		for _, g := range p.Grants {
			if g.Principal == principal {
				return true
			}
		}
	}
	return false
}

// WriteText writes the result for people.
func (r *PromoteResult) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "graph %s: %d policies in dry-run\n", r.Graph, len(r.Staged))
	if len(r.Denials) > 0 {
		fmt.Fprintf(&b, "shadow denials (%d pods):\n", len(r.Denials))
		for _, d := range r.Denials {
			fmt.Fprintf(&b, "  %s/%s: %g\n", d.Namespace, d.Pod, d.Count)
		}
	}
	if len(r.Flows) > 0 {
		fmt.Fprintf(&b, "observed flows the staged policies would deny (%d):\n", len(r.Flows))
		for _, f := range r.Flows {
			b.WriteString("  " + f.String() + "\n")
		}
	}
	for _, p := range r.Promoted {
		fmt.Fprintf(&b, "authorizationpolicy %s promoted (enforced)\n", p)
	}
	if r.Refused != "" {
		fmt.Fprintf(&b, "NOT PROMOTED: %s\n", r.Refused)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
