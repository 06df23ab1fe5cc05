package helm

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/install"
	"github.com/meshwaf/meshwaf/internal/version"
)

var update = flag.Bool("update", false, "rewrite testdata/*.yaml from the chart")

// helmSDK is the helm.sh/helm/v3 version these tests run.
const helmSDK = "v3.22.0"

var chartDir = filepath.Join("..", "..", "manifests", "helm", "meshwaf")

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	require.NoError(t, err)
	return c
}

// helmTemplate renders the chart as `helm template meshwaf CHART -n
// meshwaf-system --values` does: an install in dry-run, client only, which
// validates vals against values.schema.json.
func helmTemplate(c *chart.Chart, vals map[string]any) (string, error) {
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: os.Stderr},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...any) {},
	}
	in := action.NewInstall(cfg)
	in.DryRun, in.ClientOnly, in.Replace = true, true, true
	in.ReleaseName, in.Namespace = "meshwaf", install.DefaultMeshwafNamespace
	in.IncludeCRDs = true
	rel, err := in.Run(c, vals)
	if err != nil {
		return "", err
	}
	return rel.Manifest, nil
}

// object is one rendered object, keyed by kind/namespace/name.
type object = map[string]any

func key(o object) string {
	meta, _ := o["metadata"].(map[string]any)
	return fmt.Sprintf("%v/%v/%v", o["kind"], meta["namespace"], meta["name"])
}

// parse splits multi-document YAML into objects by key; the ConfigMap's
// meshwaf.yaml is replaced by its parsed content, so comments and key
// order of meshwaf's config file do not count, its values do.
func parse(t *testing.T, docs string) map[string]object {
	t.Helper()
	out := map[string]object{}
	for _, d := range strings.Split(docs, "\n---") {
		var o object
		require.NoError(t, yaml.Unmarshal([]byte(d), &o), "%s", d)
		if o == nil {
			continue
		}
		if o["kind"] == "ConfigMap" {
			data := o["data"].(map[string]any)
			var cfg map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(data[install.ConfigKey].(string)), &cfg))
			require.NotEmpty(t, cfg)
			data[install.ConfigKey] = cfg
		}
		k := key(o)
		require.NotContains(t, out, k, "object rendered twice")
		out[k] = o
	}
	return out
}

func TestHelmSDKVersion(t *testing.T) {
	mod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	require.Contains(t, string(mod), "helm.sh/helm/v3 "+helmSDK+"\n")
}

// Chart.yaml's appVersion is the release version; its version is the
// chart's own SemVer (Helm's convention: bumped whenever the chart
// changes), at least the release version.
func TestChartVersion(t *testing.T) {
	c := loadChart(t)
	want := strings.TrimPrefix(version.Release, "v")
	require.Equal(t, want, c.Metadata.AppVersion)
	v, err := semver.StrictNewVersion(c.Metadata.Version)
	require.NoError(t, err, "chart version")
	require.False(t, v.LessThan(semver.MustParse(want)), "chart version %s below the release %s", v, want)
	require.Equal(t, install.DefaultImage, c.Values["image"], "values.yaml image")
}

// The chart renders, object by object, what `meshwaf manifests` renders
// for the same settings: with default values the mesh mode's defaults, and
// each other mode with its values. Each rendering is also kept in
// testdata/<case>.yaml for test/cluster.
func TestChartRendersManifests(t *testing.T) {
	c := loadChart(t)
	custom := func(f func(*install.Options)) install.Options {
		o := install.DefaultOptions()
		f(&o)
		return o
	}
	cases := []struct {
		name string
		vals map[string]any
		opts install.Options
		mode install.Mode
	}{
		{"defaults", nil, install.DefaultOptions(), install.ModeMesh},
		{"envoyfilter", map[string]any{"mode": "envoyfilter"}, install.DefaultOptions(), install.ModeEnvoyFilter},
		{"pod", map[string]any{"mode": "pod"}, install.DefaultOptions(), install.ModePod},
		{"waypoint", map[string]any{"mode": "waypoint"}, install.DefaultOptions(), install.ModeWaypoint},
		{"waypoint services", map[string]any{"mode": "waypoint", "waypoint": map[string]any{
			"namespaces": []any{"shop"},
			"services": []any{
				map[string]any{"namespace": "billing", "name": "ledger"},
				map[string]any{"namespace": "billing", "name": "api"},
				map[string]any{"namespace": "auth", "name": "token"},
			},
		}}, custom(func(o *install.Options) {
			o.WaypointNamespaces = []string{"shop"}
			o.WaypointServices = []install.ServiceRef{{Namespace: "billing", Name: "ledger"}, {Namespace: "billing", Name: "api"}, {Namespace: "auth", Name: "token"}}
		}), install.ModeWaypoint},
		{"envoyfilter settings", map[string]any{
			"mode": "envoyfilter", "namespace": "waf", "serviceName": "waf", "image": "registry.example/team/meshwaf:v9.9.9",
			"timeoutMilliseconds": 1500, "failOpen": true, "statusOnError": 503, "maxRequestBytes": 65536,
			"allowPartialMessage": true, "packAsBytes": false, "grpcPort": 9443, "metricsPort": 9091,
			"optIn":            map[string]any{"label": "waf", "value": "on"},
			"callerNamespaces": []any{"shop", "billing"}, "scraperNamespaces": []any{},
			"replicas": 3, "maxReplicas": 7,
		}, custom(func(o *install.Options) {
			o.Namespace, o.ServiceName, o.Image = "waf", "waf", "registry.example/team/meshwaf:v9.9.9"
			o.Timeout, o.FailOpen, o.StatusOnError, o.MaxRequestBytes = 1500*time.Millisecond, true, 503, 65536
			o.AllowPartialMessage, o.PackAsBytes, o.GRPCPort, o.MetricsPort = true, false, 9443, 9091
			o.OptInLabel, o.OptInValue = "waf", "on"
			o.CallerNamespaces, o.ScraperNamespaces = []string{"shop", "billing"}, nil
			o.Replicas, o.MaxReplicas = 3, 7
		}), install.ModeEnvoyFilter},
		{"mesh settings", map[string]any{
			"rootNamespace": "mesh-root", "providerName": "waf-provider",
			"excludePaths": []any{"/ping"},
		}, custom(func(o *install.Options) {
			o.RootNamespace, o.ProviderName, o.ExcludePaths = "mesh-root", "waf-provider", []string{"/ping"}
		}), install.ModeMesh},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			manifest, err := helmTemplate(c, tc.vals)
			require.NoError(t, err)
			want, err := install.Render(tc.opts, tc.mode, install.PartObjects)
			require.NoError(t, err)
			golden(t, filepath.Join("testdata", strings.ReplaceAll(tc.name, " ", "-")+".yaml"), manifest)
			got, exp := parse(t, manifest), parse(t, string(want))
			require.NotEmpty(t, exp)
			for k, o := range exp {
				require.Contains(t, got, k, "the chart does not render %s", k)
				require.Equal(t, o, got[k], "%s", k)
			}
			for k := range got {
				require.Contains(t, exp, k, "the chart renders %s, meshwaf manifests does not", k)
			}
		})
	}
}

// createNamespace=false leaves out the Namespace object and nothing else.
func TestChartWithoutNamespace(t *testing.T) {
	c := loadChart(t)
	all, err := helmTemplate(c, nil)
	require.NoError(t, err)
	without, err := helmTemplate(c, map[string]any{"createNamespace": false})
	require.NoError(t, err)
	got := parse(t, without)
	want := parse(t, all)
	nsKey := "Namespace/<nil>/" + install.DefaultMeshwafNamespace
	require.Contains(t, want, nsKey)
	delete(want, nsKey)
	require.Equal(t, want, got)
}

// golden checks the chart's rendering against file, which test/cluster
// applies to the real API server (so that module needs no Helm).
func golden(t *testing.T, file, manifest string) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(file, []byte(manifest), 0o644))
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "run go test -update once to create it")
	require.Equal(t, string(want), manifest, "%s is not what the chart renders", file)
}

// values.schema.json refuses unknown keys at every level and wrong types.
func TestSchemaRejects(t *testing.T) {
	c := loadChart(t)
	cases := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"typo at the top", map[string]any{"replica": 3}, "replica"},
		{"typo in waypoint", map[string]any{"waypoint": map[string]any{"namespace": []any{"shop"}}}, "namespace"},
		{"typo in config", map[string]any{"config": map[string]any{"defaultProfile": map[string]any{"paranoialevel": 2}}}, "paranoialevel"},
		{"typo in resources", map[string]any{"resources": map[string]any{"limit": map[string]any{"cpu": "1"}}}, "limit"},
		{"string for integer", map[string]any{"replicas": "3"}, "replicas"},
		{"string for boolean", map[string]any{"failOpen": "yes"}, "failOpen"},
		{"unknown mode", map[string]any{"mode": "sidecar"}, "mode"},
		{"one replica", map[string]any{"replicas": 1}, "replicas"},
		{"status Envoy lacks", map[string]any{"statusOnError": 418}, "statusOnError"},
		{"bad namespace", map[string]any{"namespace": "Meshwaf_System"}, "namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(c, tc.vals)
			require.Error(t, err)
			require.Contains(t, err.Error(), "values don't meet the specifications of the schema")
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// The chart's own checks refuse contradictory values as install.Options
// validation does.
func TestChartRefusesContradictions(t *testing.T) {
	c := loadChart(t)
	cases := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"body above limit", map[string]any{"maxRequestBytes": 2097152}, "maxRequestBytes"},
		{"max below min replicas", map[string]any{"replicas": 5, "maxReplicas": 3}, "maxReplicas"},
		{"same ports", map[string]any{"metricsPort": 9000}, "grpcPort and metricsPort"},
		{"waypoint without targets", map[string]any{"mode": "waypoint", "waypoint": map[string]any{"namespaces": []any{}}}, "waypoint"},
		{"service of a whole namespace", map[string]any{"mode": "waypoint", "waypoint": map[string]any{
			"services": []any{map[string]any{"namespace": "default", "name": "x"}},
		}}, "inspected whole"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(c, tc.vals)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// `helm lint` (strict) finds nothing, for every mode.
func TestLint(t *testing.T) {
	for _, mode := range install.Modes() {
		t.Run(string(mode), func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = install.DefaultMeshwafNamespace
			res := l.Run([]string{chartDir}, map[string]any{"mode": string(mode)})
			require.Empty(t, res.Errors)
			for _, m := range res.Messages {
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %s", m)
				}
			}
			require.Equal(t, 1, res.TotalChartsLinted)
		})
	}
}
