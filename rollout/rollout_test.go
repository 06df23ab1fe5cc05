package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshwaf/meshwaf/internal/kubeyaml"
	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

func shopPlan(t *testing.T) *meshpolicy.Plan {
	t.Helper()
	g, err := meshpolicy.Load("../examples/shop-graph.yaml")
	require.NoError(t, err)
	return meshpolicy.NewPlan(g)
}

func find(objs []*securityv1.AuthorizationPolicy, name string) *securityv1.AuthorizationPolicy {
	for _, o := range objs {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Objects: every ALLOW policy before any default-deny, all labelled with
// the graph, dry-run only in the dry-run stage.
func TestObjects(t *testing.T) {
	plan := shopPlan(t)
	for _, stage := range []Stage{StageDryRun, StageEnforce} {
		objs := Objects(plan, stage)
		require.NotEmpty(t, objs)
		seenDeny := false
		for _, o := range objs {
			if isDefaultDeny(o) {
				seenDeny = true
				require.Equal(t, istio.DefaultDenyName, o.Name)
			} else {
				require.False(t, seenDeny, "%s/%s after a default-deny", o.Namespace, o.Name)
			}
			require.True(t, Owned(o.Labels, "shop"), o.Name)
			require.False(t, Owned(o.Labels, "other"), o.Name)
			require.Equal(t, stage == StageDryRun, isDryRun(o), o.Name)
		}
		require.True(t, seenDeny)
	}
}

func TestCheckGraphName(t *testing.T) {
	require.NoError(t, CheckGraphName("shop"))
	require.Error(t, CheckGraphName(""))
	require.Error(t, CheckGraphName(strings.Repeat("x", 64)))
	require.Error(t, CheckGraphName("a/b"))
}

func allowAll(ns, name string, l map[string]string) *securityv1.AuthorizationPolicy {
	ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}}
	ap.Spec.Action = securityv1beta1.AuthorizationPolicy_ALLOW
	ap.Spec.Rules = []*securityv1beta1.Rule{{}}
	ap.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}
	return ap
}

func TestDiff(t *testing.T) {
	plan := shopPlan(t)
	owned := func(stage Stage) []*securityv1.AuthorizationPolicy { return Objects(plan, stage) }
	tests := []struct {
		name       string
		live       func() []*securityv1.AuthorizationPolicy
		asEnforced bool
		drift      bool
		check      func(t *testing.T, r *Report)
	}{
		{"in sync", func() []*securityv1.AuthorizationPolicy { return owned(StageEnforce) }, false, false, func(t *testing.T, r *Report) {
			t.Helper()
			require.Empty(t, r.Flows.Missing)
			require.Empty(t, r.Flows.Extra)
		}},
		{"hand edit drops a caller", func() []*securityv1.AuthorizationPolicy {
			objs := owned(StageEnforce)
			ap := find(objs, "meshwaf-allow-db")
			ap.Spec.Rules[0].From[0].Source.Principals = []string{"cluster.local/ns/default/sa/auth"}
			return objs
		}, false, true, func(t *testing.T, r *Report) {
			t.Helper()
			require.Equal(t, []string{"default/meshwaf-allow-db"}, r.Edited)
			require.Equal(t, []meshpolicy.Flow{{From: "default/www", To: "default/db", Port: 8080}}, r.Flows.Missing)
			require.Equal(t, []meshpolicy.Flow{{From: "default/auth", To: "default/db", Port: 8080}}, r.Flows.Extra)
		}},
		{"absent and stale", func() []*securityv1.AuthorizationPolicy {
			var out []*securityv1.AuthorizationPolicy
			for _, o := range owned(StageEnforce) {
				if o.Name != "meshwaf-allow-auth" {
					out = append(out, o)
				}
			}
			old := find(owned(StageEnforce), "meshwaf-allow-db").DeepCopy()
			old.Name = "meshwaf-allow-gone"
			old.Spec.Selector.MatchLabels = map[string]string{"app": "gone"}
			return append(out, old)
		}, false, true, func(t *testing.T, r *Report) {
			t.Helper()
			require.Equal(t, []string{"default/meshwaf-allow-auth"}, r.Absent)
			require.Equal(t, []string{"default/meshwaf-allow-gone"}, r.Stale)
			require.Equal(t, []meshpolicy.Flow{{From: "default/www", To: "default/auth", Port: 8080}}, r.Flows.Missing)
		}},
		{"foreign policy opens db", func() []*securityv1.AuthorizationPolicy {
			return append(owned(StageEnforce), allowAll("default", "open-db", nil))
		}, false, true, func(t *testing.T, r *Report) {
			t.Helper()
			require.Len(t, r.Foreign, 1)
			require.Equal(t, "default/open-db", r.Foreign[0].Policy)
			require.Positive(t, r.Foreign[0].Changed)
			require.NotEmpty(t, r.Flows.Extra)
		}},
		{"foreign policy elsewhere", func() []*securityv1.AuthorizationPolicy {
			return append(owned(StageEnforce), allowAll("other", "open-db", nil))
		}, false, false, func(t *testing.T, r *Report) {
			t.Helper()
			require.Empty(t, r.Foreign)
		}},
		{"another graph's policy is foreign", func() []*securityv1.AuthorizationPolicy {
			return append(owned(StageEnforce), allowAll("default", "open-db", map[string]string{kubeyaml.ManagedByLabel: kubeyaml.ManagedBy, GraphLabel: "other"}))
		}, false, true, func(t *testing.T, r *Report) {
			t.Helper()
			require.Len(t, r.Foreign, 1)
			require.Empty(t, r.Stale)
		}},
		{"dry-run enforces nothing", func() []*securityv1.AuthorizationPolicy { return owned(StageDryRun) }, false, true, func(t *testing.T, r *Report) {
			t.Helper()
			require.Len(t, r.DryRun, len(owned(StageDryRun)))
			require.NotEmpty(t, r.Flows.Extra)
			require.Empty(t, r.Edited, "dry-run is a stage, not an edit")
		}},
		{"dry-run as enforced", func() []*securityv1.AuthorizationPolicy { return owned(StageDryRun) }, true, false, func(t *testing.T, r *Report) {
			t.Helper()
			require.NotEmpty(t, r.DryRun)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Diff(plan, tt.live(), DiffOptions{AsEnforced: tt.asEnforced})
			require.Equal(t, tt.drift, r.Drift())
			tt.check(t, r)
			var b bytes.Buffer
			require.NoError(t, r.WriteText(&b))
			if tt.drift {
				require.Contains(t, b.String(), "DRIFT")
			} else {
				require.Contains(t, b.String(), "no drift")
			}
			js, err := json.Marshal(r)
			require.NoError(t, err)
			var back map[string]any
			require.NoError(t, json.Unmarshal(js, &back))
			require.Equal(t, tt.drift, back["drift"])
		})
	}
}

// fakeQuerier answers by the first registered substring the query holds
// and records the queries.
type fakeQuerier struct {
	answers []fakeAnswer
	queries []string
}

type fakeAnswer struct {
	contains string
	vec      model.Vector
}

func (f *fakeQuerier) Query(_ context.Context, q string, _ time.Time) (model.Vector, error) {
	f.queries = append(f.queries, q)
	for _, a := range f.answers {
		if strings.Contains(q, a.contains) {
			return a.vec, nil
		}
	}
	return nil, nil
}

func sample(v float64, labels ...string) *model.Sample {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v)}
}

func stagedClient(plan *meshpolicy.Plan, at time.Time) *istiofake.Clientset {
	var objs []runtime.Object
	for _, o := range Objects(plan, StageDryRun) {
		o.Annotations[StagedAtAnnotation] = at.UTC().Format(time.RFC3339)
		objs = append(objs, o)
	}
	return istiofake.NewSimpleClientset(objs...)
}

// Promote enforces only the graph's own policies: a staged policy edited
// by hand, one missing or one no longer generated stops it before any query.
func TestPromoteRefusesOtherPolicies(t *testing.T) {
	plan := shopPlan(t)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, c *istiofake.Clientset)
		want   string
	}{
		{"edited", func(t *testing.T, c *istiofake.Clientset) {
			t.Helper()
			ap, err := c.SecurityV1().AuthorizationPolicies("default").Get(ctx, "meshwaf-allow-db", metav1.GetOptions{})
			require.NoError(t, err)
			ap.Spec.Rules[0].From[0].Source.Principals = []string{"*"}
			_, err = c.SecurityV1().AuthorizationPolicies("default").Update(ctx, ap, metav1.UpdateOptions{})
			require.NoError(t, err)
		}, "default/meshwaf-allow-db edited"},
		{"absent", func(t *testing.T, c *istiofake.Clientset) {
			t.Helper()
			require.NoError(t, c.SecurityV1().AuthorizationPolicies("default").Delete(ctx, "meshwaf-allow-auth", metav1.DeleteOptions{}))
		}, "default/meshwaf-allow-auth absent"},
		{"stale", func(t *testing.T, c *istiofake.Clientset) {
			t.Helper()
			ap, err := c.SecurityV1().AuthorizationPolicies("default").Get(ctx, "meshwaf-allow-db", metav1.GetOptions{})
			require.NoError(t, err)
			ap = ap.DeepCopy()
			ap.Name, ap.ResourceVersion = "meshwaf-allow-old", ""
			_, err = c.SecurityV1().AuthorizationPolicies("default").Create(ctx, ap, metav1.CreateOptions{})
			require.NoError(t, err)
		}, "default/meshwaf-allow-old no longer generated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := stagedClient(plan, now.Add(-time.Hour))
			tt.change(t, c)
			q := &fakeQuerier{}
			res, err := Promote(ctx, c.SecurityV1(), q, plan, PromoteOptions{StableFor: 10 * time.Minute, Now: func() time.Time { return now }})
			require.NoError(t, err)
			require.Contains(t, res.Refused, tt.want)
			require.Empty(t, res.Promoted)
			require.Empty(t, q.queries)
		})
	}
}

func TestPromote(t *testing.T) {
	plan := shopPlan(t)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	counters := fakeAnswer{"count(count_over_time", model.Vector{sample(12)}}
	denials := fakeAnswer{"authz_dry_run_result=\"denied\"", model.Vector{sample(7, "namespace", "default", "pod", "db-1")}}
	requests := fakeAnswer{"istio_requests_total", model.Vector{
		sample(40, "source_principal", "spiffe://cluster.local/ns/default/sa/www", "destination_principal", "spiffe://cluster.local/ns/default/sa/db",
			"destination_workload", "db", "destination_workload_namespace", "default"),
		sample(5, "source_principal", "spiffe://cluster.local/ns/default/sa/auth", "destination_principal", "spiffe://cluster.local/ns/default/sa/db",
			"destination_workload", "db", "destination_workload_namespace", "default"),
		sample(2, "source_principal", "unknown", "destination_principal", "spiffe://cluster.local/ns/default/sa/db",
			"destination_workload", "db", "destination_workload_namespace", "default"),
		sample(3, "source_principal", "spiffe://cluster.local/ns/default/sa/www", "destination_principal", "spiffe://cluster.local/ns/default/sa/cache",
			"destination_workload", "cache", "destination_workload_namespace", "default"),
	}}
	tests := []struct {
		name     string
		stagedAt time.Time
		answers  []fakeAnswer
		refused  string // substring; empty: promoted
		flows    []string
	}{
		{"staged too recently", now.Add(-5 * time.Minute), []fakeAnswer{counters}, "in dry-run for less than 10m0s", nil},
		{"no shadow counters", now.Add(-time.Hour), nil, "no RBAC shadow counters", nil},
		{"shadow denials", now.Add(-time.Hour), []fakeAnswer{counters, denials, requests}, "7 shadow denials", []string{
			"cluster.local/ns/default/sa/auth -> default/db (5, istio_requests_total)",
			"cluster.local/ns/default/sa/www -> default/cache (3, istio_requests_total)",
			"unknown -> default/db (2, istio_requests_total)",
		}},
		{"stable", now.Add(-time.Hour), []fakeAnswer{counters}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := stagedClient(plan, tt.stagedAt)
			q := &fakeQuerier{answers: tt.answers}
			res, err := Promote(context.Background(), c.SecurityV1(), q, plan, PromoteOptions{StableFor: 10 * time.Minute, Now: func() time.Time { return now }})
			require.NoError(t, err)
			var got []string
			for _, f := range res.Flows {
				got = append(got, f.String())
			}
			require.Equal(t, tt.flows, got)
			live, err := c.SecurityV1().AuthorizationPolicies("").List(context.Background(), metav1.ListOptions{})
			require.NoError(t, err)
			var b bytes.Buffer
			require.NoError(t, res.WriteText(&b))
			if tt.refused != "" {
				require.Contains(t, res.Refused, tt.refused)
				require.Contains(t, b.String(), "NOT PROMOTED")
				require.Empty(t, res.Promoted)
				for _, ap := range live.Items {
					require.True(t, isDryRun(ap), "%s promoted despite the refusal", ap.Name)
				}
				return
			}
			require.Empty(t, res.Refused)
			require.Len(t, res.Promoted, len(live.Items))
			for _, ap := range live.Items {
				require.False(t, isDryRun(ap), ap.Name)
				require.NotContains(t, ap.Annotations, StagedAtAnnotation)
			}
			// The default-deny is promoted last.
			var patched []string
			for _, a := range c.Actions() {
				if p, ok := a.(k8stesting.PatchAction); ok {
					patched = append(patched, p.GetName())
				}
			}
			require.Equal(t, istio.DefaultDenyName, patched[len(patched)-1])
			require.NotContains(t, patched[:len(patched)-1], istio.DefaultDenyName)
			for _, q := range q.queries {
				require.Contains(t, q, `namespace=~"default|meshwaf-system"`, "queries are limited to the staged namespaces")
			}
		})
	}
}

func TestShadowDeniedSelector(t *testing.T) {
	got := ShadowDeniedSelector(DefaultMetricLabels(), "a|b")
	require.Equal(t, `{__name__=~"envoy_.*rbac.*",authz_dry_run_action="allow",authz_dry_run_result="denied",namespace=~"a|b"}`, got)
	_ = fmt.Sprint(got)
}
