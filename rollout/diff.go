package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// DiffOptions tune Diff.
type DiffOptions struct {
	// RootNamespace is Istio's root namespace (default istio-system).
	RootNamespace string
	// AsEnforced evaluates the graph's own dry-run policies as if they
	// were promoted (what `promote` would enforce); otherwise dry-run
	// policies enforce nothing, as in the sidecars.
	AsEnforced bool
}

// Report is how a live cluster's AuthorizationPolicies differ from a graph.
type Report struct {
	Graph string `json:"graph"`
	// Policies is how many AuthorizationPolicies the cluster holds.
	Policies int `json:"policies"`
	// Flows: allowed but not in the graph (extra) and the reverse
	// (missing), and the methods/paths and conditional differences.
	Flows meshpolicy.Diff `json:"-"`
	// Absent: generated for the graph, not in the cluster.
	Absent []string `json:"absent,omitempty"`
	// Edited: the graph's own policies whose spec differs from what
	// generate renders (compared as protobuf messages, not as bytes).
	Edited []string `json:"edited,omitempty"`
	// Stale: the graph's own policies generate no longer renders.
	Stale []string `json:"stale,omitempty"`
	// DryRun: the graph's own policies in dry-run (they enforce nothing).
	DryRun []string `json:"dryRun,omitempty"`
	// Foreign: policies meshwaf does not own that change which flows are
	// allowed, each with the flows it changes.
	Foreign []ForeignPolicy `json:"foreign,omitempty"`
	// Notes from the evaluator (policies ignored or partly understood).
	Notes []string `json:"notes,omitempty"`
}

// ForeignPolicy is a policy meshwaf does not own that changes the outcome.
type ForeignPolicy struct {
	Policy string `json:"policy"`
	// Changed is how many (source, destination port) flows it changes.
	Changed int `json:"changed"`
}

// Drift reports whether the cluster differs from the graph in any way the
// report lists, except dry-run state and notes.
func (r *Report) Drift() bool {
	return r.Flows.Mismatch(false) || len(r.Absent)+len(r.Edited)+len(r.Stale)+len(r.Foreign) > 0
}

// ListAll reads every AuthorizationPolicy of the cluster.
func ListAll(ctx context.Context, c Client) ([]*securityv1.AuthorizationPolicy, error) {
	l, err := c.AuthorizationPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing AuthorizationPolicies: %w", err)
	}
	out := l.Items
	sortByName(out)
	return out, nil
}

// Diff compares live (every AuthorizationPolicy of the cluster) with
// plan: the flows they allow, evaluated with Istio's semantics
// (istio.Evaluate), against the graph's; the graph's own policies against
// what generate renders; and each policy meshwaf does not own, by
// evaluating without it.
func Diff(plan *meshpolicy.Plan, live []*securityv1.AuthorizationPolicy, o DiffOptions) *Report {
	graph := plan.Graph.Name
	r := &Report{Graph: graph, Policies: len(live)}
	want := map[string]*securityv1.AuthorizationPolicy{}
	for _, ap := range Objects(plan, StageEnforce) {
		want[ap.Namespace+"/"+ap.Name] = ap
	}
	policies := make([]istio.Policy, 0, len(live))
	var foreign []int // indexes into policies
	seen := map[string]bool{}
	for _, ap := range live {
		key := ap.Namespace + "/" + ap.Name
		obj := ap
		if Owned(ap.Labels, graph) {
			seen[key] = true
			switch g := want[key]; {
			case g == nil:
				r.Stale = append(r.Stale, key)
			case !proto.Equal(&g.Spec, &ap.Spec):
				r.Edited = append(r.Edited, key)
			}
			if isDryRun(ap) {
				r.DryRun = append(r.DryRun, key)
				if o.AsEnforced {
					obj = ap.DeepCopy()
					delete(obj.Annotations, istio.DryRunAnnotation)
				}
			}
		} else {
			foreign = append(foreign, len(policies))
		}
		policies = append(policies, istio.Policy{Origin: "cluster", Object: obj})
	}
	for _, ap := range Objects(plan, StageEnforce) {
		if key := ap.Namespace + "/" + ap.Name; !seen[key] {
			r.Absent = append(r.Absent, key)
		}
	}
	eo := istio.EvalOptions{RootNamespace: o.RootNamespace}
	got, notes := istio.Evaluate(plan, policies, eo)
	r.Notes = notes
	r.Flows = plan.Compare(plan.Expected(), got)
	namespaces := map[string]bool{rootNamespace(o.RootNamespace): true}
	for _, d := range plan.Destinations {
		namespaces[d.Namespace] = true
	}
	for _, i := range foreign {
		p := policies[i].Object
		if !namespaces[p.Namespace] {
			continue // applies to no destination of the graph
		}
		without := slices.Delete(slices.Clone(policies), i, i+1)
		alt, _ := istio.Evaluate(plan, without, eo)
		if n := changedFlows(got, alt); n > 0 {
			r.Foreign = append(r.Foreign, ForeignPolicy{Policy: p.Namespace + "/" + p.Name, Changed: n})
		}
	}
	return r
}

func rootNamespace(ns string) string {
	if ns == "" {
		return "istio-system"
	}
	return ns
}

// changedFlows counts the flows allowed, partial or conditional in one
// reachability and not the other.
func changedFlows(a, b *meshpolicy.Reachability) int {
	n := 0
	for k := range a.Allowed {
		for _, pair := range [][2]meshpolicy.Bits{{a.Allowed[k], b.Allowed[k]}, {a.Partial[k], b.Partial[k]}, {a.Conditional[k], b.Conditional[k]}} {
			x := pair[0].Clone()
			for i := range x {
				x[i] ^= pair[1][i]
			}
			n += x.Count()
		}
	}
	return n
}

// MarshalJSON writes the report with each flow as "source -> destination:port"
// (flows with other requests followed by the planned and allowed ones).
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	strs := func(fs []meshpolicy.Flow) []string {
		out := []string{}
		for _, f := range fs {
			out = append(out, f.String())
		}
		return out
	}
	return json.Marshal(struct {
		*plain
		Drift       bool     `json:"drift"`
		Missing     []string `json:"missing"`
		Extra       []string `json:"extra"`
		Broader     []string `json:"broader"`
		Narrower    []string `json:"narrower"`
		Conditional []string `json:"conditional"`
		Requests    []string `json:"requests"`
		Unresolved  []string `json:"unresolved"`
	}{(*plain)(r), r.Drift(), strs(r.Flows.Missing), strs(r.Flows.Extra), strs(r.Flows.Broader), strs(r.Flows.Narrower), strs(r.Flows.Conditional),
		requestStrs(r.Flows.Requests), strs(r.Flows.Unresolved)})
}

// requestStrs writes each flow with its planned and allowed requests.
func requestStrs(ds []meshpolicy.RequestDiff) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

// WriteText writes the report for people, ending with a one-line verdict.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "graph %s: %d AuthorizationPolicies in the cluster\n", r.Graph, r.Policies)
	for _, n := range r.Notes {
		b.WriteString("note: " + n + "\n")
	}
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n", title, len(items))
		for _, it := range items {
			b.WriteString("  " + it + "\n")
		}
	}
	list("absent: generated for the graph, not in the cluster", r.Absent)
	list("edited: owned by meshwaf, spec differs from what generate renders", r.Edited)
	list("stale: owned by meshwaf, no longer generated (apply --prune deletes them)", r.Stale)
	list("dry-run: owned by meshwaf, enforcing nothing until promoted", r.DryRun)
	if len(r.Foreign) > 0 {
		fmt.Fprintf(&b, "foreign: not owned by meshwaf, changing which flows are allowed (%d):\n", len(r.Foreign))
		for _, f := range r.Foreign {
			fmt.Fprintf(&b, "  %s (%d flows)\n", f.Policy, f.Changed)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := r.Flows.WriteDiff(w, false); err != nil {
		return err
	}
	verdict := "no drift: the cluster allows exactly the graph's flows with the policies meshwaf generates"
	if r.Drift() {
		verdict = "DRIFT: the cluster differs from graph " + r.Graph
	}
	_, err := fmt.Fprintln(w, verdict)
	return err
}
