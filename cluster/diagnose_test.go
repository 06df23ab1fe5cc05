package cluster

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// codesOf are the distinct codes of fs, sorted.
func codesOf(fs []Finding) []Code {
	var out []Code
	for _, f := range fs {
		if !slices.Contains(out, f.Code) {
			out = append(out, f.Code)
		}
	}
	slices.Sort(out)
	return out
}

// Every failure mode has a fixture (testdata/<name>.yaml: base.yaml changed
// one way) and gives exactly the codes listed; the healthy base gives the
// health and coverage infos only.
func TestDiagnoseFixtures(t *testing.T) {
	base := []Code{CodeHealthServing, CodeWorkloadInspected}
	with := func(c ...Code) []Code {
		out := append(slices.Clone(base), c...)
		slices.Sort(out)
		return out
	}
	tests := []struct {
		fixture string
		want    []Code
		// object is what the first finding of a code not in base
		// concerns, when checked.
		object string
	}{
		{"", base, ""},
		{"mesh-config-missing.yaml", with(CodeMeshConfigMissing), "ConfigMap istio-system/istio"},
		{"provider-missing.yaml", []Code{CodeProviderMissing, CodeHealthServing, CodeWorkloadUncovered}, "ConfigMap istio-system/istio"},
		{"provider-not-grpc.yaml", with(CodeProviderNotGRPC), "ConfigMap istio-system/istio"},
		{"provider-wrong-service.yaml", with(CodeProviderService), "ConfigMap istio-system/istio"},
		{"provider-wrong-port.yaml", with(CodeProviderPort), "ConfigMap istio-system/istio"},
		{"provider-no-timeout.yaml", with(CodeProviderTimeout), ""},
		{"provider-short-timeout.yaml", with(CodeProviderTimeout), ""},
		{"provider-timeout-within-queue-wait.yaml", with(CodeProviderTimeout), ""},
		{"provider-fail-open.yaml", with(CodeProviderFailOpen), ""},
		{"provider-no-body.yaml", with(CodeProviderNoBody), ""},
		{"provider-body-over-limit.yaml", with(CodeProviderBodyOverLimit), ""},
		{"provider-partial-denied.yaml", with(CodeProviderPartialDenied), ""},
		{"provider-partial-passes.yaml", with(CodeProviderPartialPasses), ""},
		{"meshwaf-config-missing.yaml", with(CodeMeshwafConfigUnreadable), "ConfigMap meshwaf-system/meshwaf"},
		{"deployment-missing.yaml", with(CodeDeploymentMissing), "Deployment meshwaf-system/meshwaf"},
		{"deployment-unavailable.yaml", with(CodeDeploymentUnavailable), "Deployment meshwaf-system/meshwaf"},
		{"deployment-degraded.yaml", with(CodeDeploymentDegraded), "Deployment meshwaf-system/meshwaf"},
		{"workload-uncovered.yaml", []Code{CodeHealthServing, CodeWorkloadUncovered}, "Deployment shop/cart"},
		{"workload-uncovered-other-namespace.yaml", []Code{CodeHealthServing, CodeWorkloadUncovered}, "Deployment shop/cart"},
		{"workload-other-custom.yaml", with(CodeWorkloadOtherCustom), "Deployment shop/cart"},
		{"workload-other-custom-allowed.yaml", with(CodeWorkloadOtherCustomOK), "Deployment shop/cart"},
		{"workload-inspected-twice.yaml", with(CodeWorkloadInspectedTwice), "Deployment shop/cart"},
		{"no-workload-opted-in.yaml", []Code{CodeHealthServing, CodeNoWorkloadOptedIn}, ""},
		{"envoyfilter-mode.yaml", base, ""},
		{"pod-mode.yaml", []Code{CodeWorkloadInspected}, ""},
		{"envoyfilter-on-waypoint-label.yaml", with(CodeEnvoyFilterOnWaypoint), "EnvoyFilter shop/waypoint-lua"},
		{"envoyfilter-on-waypoint-selector.yaml", with(CodeEnvoyFilterOnWaypoint), "EnvoyFilter shop/waypoint-lua"},
		{"envoyfilter-on-waypoint-targetref.yaml", with(CodeEnvoyFilterOnWaypoint), "EnvoyFilter shop/waypoint-lua"},
		{"waypoint-mode.yaml", base, ""},
		{"waypoint-namespace-label.yaml", base, ""},
		{"waypoint-target-idle.yaml", with(CodeWaypointTargetIdle), "Gateway ambient/waypoint"},
		{"waypoint-other-custom.yaml", with(CodeWorkloadOtherCustom), "Gateway ambient/waypoint"},
		{"policy-dry-run.yaml", with(CodePolicyAwaitingPromotion), "AuthorizationPolicy shop/cart"},
	}
	used := map[string]bool{"base.yaml": true}
	for _, tt := range tests {
		name := strings.TrimSuffix(tt.fixture, ".yaml")
		if name == "" {
			name = "healthy"
		}
		used[tt.fixture] = true
		t.Run(name, func(t *testing.T) {
			s := readSnapshot(t, loadFixture(t, tt.fixture), serving, ReadOptions{})
			fs := Diagnose(s, testTarget())
			require.Equal(t, tt.want, codesOf(fs), "findings: %+v", fs)
			for _, f := range fs {
				require.Equal(t, severityOf(f.Code), f.Severity, f.Code)
				require.NotEmpty(t, f.Message, f.Code)
				if f.Severity != SeverityInfo {
					require.NotEmpty(t, f.Fix, "%s has no fix", f.Code)
				}
			}
			if tt.object != "" {
				i := slices.IndexFunc(fs, func(f Finding) bool { return !slices.Contains(base, f.Code) })
				require.NotEqual(t, -1, i)
				require.Equal(t, tt.object, fs[i].Object.String(), fs[i].Code)
			}
			require.Equal(t, Worst(fs, SeverityError), slices.ContainsFunc(tt.want, func(c Code) bool {
				return severityOf(c) == SeverityError
			}))
		})
	}
	entries, err := os.ReadDir("testdata")
	require.NoError(t, err)
	for _, e := range entries {
		require.True(t, used[e.Name()], "testdata/%s is in no test case", e.Name())
	}
}

// The health probe's outcomes, over the healthy base.
func TestDiagnoseHealth(t *testing.T) {
	tests := []struct {
		name  string
		probe Health
		skip  bool
		want  Code
	}{
		{"serving", Health{Probed: true, Reachable: true, Status: "SERVING"}, false, CodeHealthServing},
		{"not serving", Health{Probed: true, Reachable: true, Status: "NOT_SERVING"}, false, CodeHealthNotServing},
		{"unreachable", Health{Probed: true, Err: "no such host"}, false, CodeHealthUnreachable},
		{"skipped", Health{}, true, CodeHealthSkipped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dialled string
			probe := func(_ context.Context, address string) Health {
				dialled = address
				h := tt.probe
				h.Address = address
				return h
			}
			s := readSnapshot(t, loadFixture(t, ""), probe, ReadOptions{SkipHealth: tt.skip})
			fs := Diagnose(s, testTarget())
			want := []Code{tt.want, CodeWorkloadInspected}
			slices.Sort(want)
			require.Equal(t, want, codesOf(fs))
			if tt.skip {
				require.Empty(t, dialled, "skipped, yet probed")
			} else {
				require.Equal(t, "meshwaf.meshwaf-system.svc.cluster.local:9000", dialled)
			}
		})
	}
	// --health-address replaces the Service's address.
	var dialled string
	readSnapshot(t, loadFixture(t, ""), func(_ context.Context, a string) Health { dialled = a; return Health{} },
		ReadOptions{HealthAddress: "127.0.0.1:19000"})
	require.Equal(t, "127.0.0.1:19000", dialled)
}

func TestCodesCatalogue(t *testing.T) {
	seen := map[Code]bool{}
	for i, c := range Codes() {
		require.Regexp(t, `^MW\d{4}$`, string(c.Code))
		require.False(t, seen[c.Code], "duplicate %s", c.Code)
		seen[c.Code] = true
		require.Contains(t, []Severity{SeverityError, SeverityWarning, SeverityInfo}, c.Severity)
		require.NotEmpty(t, c.Title)
		if i > 0 {
			require.Less(t, Codes()[i-1].Code, c.Code, "catalogue in code order")
		}
	}
}

// The README's "Troubleshoot with meshwaf doctor" lists every code with its
// catalogue severity and title, and no other code.
func TestCodesDocumented(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	const heading = "## Troubleshoot with meshwaf doctor\n"
	_, section, ok := strings.Cut(string(data), heading)
	require.True(t, ok, "README has no section %q", heading)
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	for _, c := range Codes() {
		require.Contains(t, section, "\n| "+string(c.Code)+" | "+string(c.Severity)+" | "+c.Title+" |", "README row of %s", c.Code)
	}
	for _, m := range regexp.MustCompile(`\| (MW\d{4}) \|`).FindAllStringSubmatch(section, -1) {
		require.True(t, slices.ContainsFunc(Codes(), func(c CodeInfo) bool { return string(c.Code) == m[1] }), "README lists %s, which is not a code", m[1])
	}
}
