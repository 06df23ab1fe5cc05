package rollout

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	applysecurityv1 "istio.io/client-go/pkg/applyconfiguration/security/v1"
	securityclient "istio.io/client-go/pkg/clientset/versioned/typed/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshwaf/meshwaf/internal/kubeyaml"
	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Names meshwaf writes on the objects it applies.
const (
	// FieldManager is the server-side apply field manager.
	FieldManager = "meshwaf"
	// GraphLabel names the ServiceGraph an object was generated from.
	GraphLabel = "meshwaf.io/graph"
	// StagedAtAnnotation is when an object's current spec went into
	// dry-run (RFC 3339, UTC); Promote waits --stable-for from it.
	StagedAtAnnotation = "meshwaf.io/staged-at"
)

// Stage is how applied AuthorizationPolicies act.
type Stage string

// Stages.
const (
	// StageDryRun applies with istio.io/dry-run: "true": sidecars count
	// (shadow) decisions and enforce none.
	StageDryRun Stage = "dry-run"
	// StageEnforce applies the policies enforced.
	StageEnforce Stage = "enforce"
)

// ParseStage reads a --stage value.
func ParseStage(s string) (Stage, error) {
	switch Stage(s) {
	case StageDryRun, StageEnforce:
		return Stage(s), nil
	}
	return "", fmt.Errorf("stage %q: want %s or %s", s, StageDryRun, StageEnforce)
}

// Client reads and writes AuthorizationPolicies (the typed client of
// security.istio.io/v1, or its fake).
type Client = securityclient.AuthorizationPoliciesGetter

// Owned reports whether an object with these labels belongs to graph.
func Owned(l map[string]string, graph string) bool {
	return l[kubeyaml.ManagedByLabel] == kubeyaml.ManagedBy && l[GraphLabel] == graph
}

// OwnedSelector is the label selector of graph's objects.
func OwnedSelector(graph string) string {
	return labels.Set{kubeyaml.ManagedByLabel: kubeyaml.ManagedBy, GraphLabel: graph}.String()
}

// CheckGraphName reports whether a graph's name can be a label value.
func CheckGraphName(name string) error {
	if errs := validation.IsValidLabelValue(name); len(errs) > 0 || name == "" {
		return fmt.Errorf("graph name %q cannot label the objects meshwaf owns: %v", name, errs)
	}
	return nil
}

// Objects are the AuthorizationPolicies of plan as Apply writes them,
// labelled with the graph's name, in apply order: every ALLOW policy, then
// the allow-nothing default-deny of each namespace.
func Objects(plan *meshpolicy.Plan, stage Stage) []*securityv1.AuthorizationPolicy {
	objs := istio.AuthorizationPolicies(plan, stage == StageDryRun)
	for _, o := range objs {
		o.Labels[GraphLabel] = plan.Graph.Name
	}
	sortApplyOrder(objs)
	return objs
}

// sortApplyOrder puts default-deny policies (allow-nothing) after every
// other, keeping the order within each group stable.
func sortApplyOrder(objs []*securityv1.AuthorizationPolicy) {
	sort.SliceStable(objs, func(i, j int) bool {
		return !isDefaultDeny(objs[i]) && isDefaultDeny(objs[j])
	})
}

// isDefaultDeny: an ALLOW policy without rules admits nothing.
func isDefaultDeny(ap *securityv1.AuthorizationPolicy) bool {
	return ap.Spec.Action == securityv1beta1.AuthorizationPolicy_ALLOW && len(ap.Spec.Rules) == 0
}

// Action is what Apply did (or, in a server dry run, would do) to one object.
type Action string

// Actions.
const (
	ActionCreated    Action = "created"
	ActionConfigured Action = "configured"
	ActionUnchanged  Action = "unchanged"
	ActionPruned     Action = "pruned"
)

// Change is one object Apply touched.
type Change struct {
	Action    Action `json:"action"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (c Change) String() string {
	return fmt.Sprintf("authorizationpolicy %s/%s %s", c.Namespace, c.Name, c.Action)
}

// ApplyOptions choose how Apply writes.
type ApplyOptions struct {
	Stage Stage
	// ServerDryRun sends every request with dryRun=All: the API server
	// validates and admits, stores nothing.
	ServerDryRun bool
	// Prune deletes the graph's objects that are no longer generated.
	Prune bool
	// Now stamps StagedAtAnnotation; time.Now when nil.
	Now func() time.Time
}

// Apply server-side-applies plan's policies in apply order, then prunes.
// The graph's own objects are applied with Force (meshwaf takes back
// fields someone else changed); an object of the same name that meshwaf
// does not own is applied without, so a conflict is an error rather than a
// takeover. In StageDryRun an object keeps its StagedAtAnnotation while
// its spec and dry-run state are unchanged, so re-applying does not
// restart the wait before promotion.
func Apply(ctx context.Context, c Client, plan *meshpolicy.Plan, o ApplyOptions) ([]Change, error) {
	if err := CheckGraphName(plan.Graph.Name); err != nil {
		return nil, err
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	live, err := ListOwned(ctx, c, plan.Graph.Name)
	if err != nil {
		return nil, err
	}
	byKey := map[string]*securityv1.AuthorizationPolicy{}
	for _, ap := range live {
		byKey[ap.Namespace+"/"+ap.Name] = ap
	}
	var dryRun []string
	if o.ServerDryRun {
		dryRun = []string{metav1.DryRunAll}
	}
	stamp := now().UTC().Format(time.RFC3339)
	var changes []Change
	generated := map[string]bool{}
	for _, want := range Objects(plan, o.Stage) {
		key := want.Namespace + "/" + want.Name
		generated[key] = true
		have := byKey[key]
		if o.Stage == StageDryRun {
			at := stamp
			if have != nil && isDryRun(have) && proto.Equal(&have.Spec, &want.Spec) && have.Annotations[StagedAtAnnotation] != "" {
				at = have.Annotations[StagedAtAnnotation]
			}
			want.Annotations[StagedAtAnnotation] = at
		}
		cfg := applysecurityv1.AuthorizationPolicy(want.Name, want.Namespace).
			WithLabels(want.Labels).
			WithAnnotations(want.Annotations)
		cfg.Spec = proto.Clone(&want.Spec).(*securityv1beta1.AuthorizationPolicy)
		_, err := c.AuthorizationPolicies(want.Namespace).Apply(ctx, cfg, metav1.ApplyOptions{
			FieldManager: FieldManager, Force: have != nil, DryRun: dryRun,
		})
		if err != nil {
			return changes, fmt.Errorf("applying AuthorizationPolicy %s: %w", key, err)
		}
		act := ActionCreated
		if have != nil {
			act = ActionConfigured
			if proto.Equal(&have.Spec, &want.Spec) && maps.Equal(have.Labels, want.Labels) && sameAnnotations(have.Annotations, want.Annotations) {
				act = ActionUnchanged
			}
		}
		changes = append(changes, Change{Action: act, Namespace: want.Namespace, Name: want.Name})
	}
	if !o.Prune {
		return changes, nil
	}
	for _, ap := range live {
		key := ap.Namespace + "/" + ap.Name
		if generated[key] {
			continue
		}
		err := c.AuthorizationPolicies(ap.Namespace).Delete(ctx, ap.Name, metav1.DeleteOptions{
			DryRun: dryRun, Preconditions: &metav1.Preconditions{UID: &ap.UID},
		})
		if err != nil {
			return changes, fmt.Errorf("pruning AuthorizationPolicy %s: %w", key, err)
		}
		changes = append(changes, Change{Action: ActionPruned, Namespace: ap.Namespace, Name: ap.Name})
	}
	return changes, nil
}

// sameAnnotations compares the annotations meshwaf writes; others (kubectl's,
// a controller's) are not meshwaf's business.
func sameAnnotations(have, want map[string]string) bool {
	for _, k := range []string{istio.DryRunAnnotation, istio.ReasonAnnotation, StagedAtAnnotation} {
		hv, hok := have[k]
		wv, wok := want[k]
		if hok != wok || hv != wv {
			return false
		}
	}
	return true
}

func isDryRun(ap *securityv1.AuthorizationPolicy) bool {
	return ap.Annotations[istio.DryRunAnnotation] == "true"
}

// ListOwned lists graph's AuthorizationPolicies in every namespace,
// sorted by namespace and name.
func ListOwned(ctx context.Context, c Client, graph string) ([]*securityv1.AuthorizationPolicy, error) {
	l, err := c.AuthorizationPolicies("").List(ctx, metav1.ListOptions{LabelSelector: OwnedSelector(graph)})
	if err != nil {
		return nil, fmt.Errorf("listing the AuthorizationPolicies of graph %s: %w", graph, err)
	}
	out := l.Items
	sortByName(out)
	return out, nil
}

func sortByName(objs []*securityv1.AuthorizationPolicy) {
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].Namespace != objs[j].Namespace {
			return objs[i].Namespace < objs[j].Namespace
		}
		return objs[i].Name < objs[j].Name
	})
}
