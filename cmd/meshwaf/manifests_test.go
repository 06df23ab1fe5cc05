package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/install"
)

// yamlDocs splits multi-document YAML into documents with their kinds.
func yamlDocs(t *testing.T, b string) (docs []map[string]any, kinds []string) {
	t.Helper()
	for _, d := range strings.Split(b, "\n---\n") {
		if strings.TrimSpace(d) == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(d), &m), "%s", d)
		docs = append(docs, m)
		kind, _ := m["kind"].(string)
		kinds = append(kinds, kind)
	}
	return docs, kinds
}

func TestManifestsCommand(t *testing.T) {
	base := []string{"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
		"PodDisruptionBudget", "HorizontalPodAutoscaler", "PeerAuthentication", "AuthorizationPolicy"}
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantKinds []string
		want      []string // in stdout (exit 0) or stderr
	}{
		{"default is mesh", []string{"manifests"}, exitOK, append(append([]string{}, base...), "AuthorizationPolicy"),
			[]string{"action: CUSTOM", "name: meshwaf\n", "- /healthz"}},
		{"envoyfilter", []string{"manifests", "--mode", "envoyfilter"}, exitOK, append(append([]string{}, base...), "EnvoyFilter"),
			[]string{"cluster_name: outbound|9000||meshwaf.meshwaf-system.svc.cluster.local", "timeout: 0.500s", "code: Forbidden"}},
		{"pod", []string{"manifests", "--mode", "pod"}, exitOK, []string{"ServiceEntry", "AuthorizationPolicy"},
			[]string{"meshwaf.local", "127.0.0.1", "name: meshwaf-local"}},
		{"istio operator", []string{"manifests", "--part", "istio-operator"}, exitOK, []string{"IstioOperator"},
			[]string{"timeout: 0.500s", "statusOnError: \"403\"", "failOpen: false", "maxRequestBytes: 1048576"}},
		{"pod patch", []string{"manifests", "--mode", "pod", "--part", "pod-patch"}, exitOK, []string{"ConfigMap", "Deployment"},
			[]string{`grpcAddress: "127.0.0.1:9000"`, "meshwaf.io/inspect: enabled"}},
		{"profile route", []string{"manifests", "--mode", "envoyfilter", "--part", "profile-route"}, exitOK, []string{"EnvoyFilter"},
			[]string{"meshwaf-profile: strict"}},
		{"options", []string{"manifests", "--mode", "envoyfilter", "--namespace", "waf", "--grpc-port", "9100", "--timeout", "250ms",
			"--fail-open", "--status-on-error", "503", "--max-request-bytes", "65536", "--opt-in-label", "example.com/waf=on"}, exitOK,
			append(append([]string{}, base...), "EnvoyFilter"),
			[]string{"outbound|9100||meshwaf.waf.svc.cluster.local", "timeout: 0.250s", "failure_mode_allow: true",
				"code: ServiceUnavailable", "max_request_bytes: 65536", "example.com/waf: \"on\"", "failOpen: true"}},
		{"exclude paths cleared", []string{"manifests", "--exclude-path", ""}, exitOK, nil, nil},
		{"exclude paths replaced", []string{"manifests", "--exclude-path", "/ping", "--exclude-path", "/status/*"}, exitOK, nil,
			[]string{"- /ping\n", "- /status/*\n"}},
		{"body over meshwaf's limit", []string{"manifests", "--max-request-bytes", "2097152"}, exitUsage, nil,
			[]string{"above meshwaf's requestBodyLimit 1048576"}},
		{"bigger limit allows it", []string{"manifests", "--max-request-bytes", "2097152", "--request-body-limit", "2097152"}, exitOK, nil,
			[]string{"requestBodyLimit: 2097152"}},
		{"waypoint", []string{"manifests", "--mode", "waypoint"}, exitOK, append(append([]string{}, base...), "AuthorizationPolicy"),
			[]string{"action: CUSTOM", "  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: waypoint\n", "namespace: default\n"}},
		{"waypoint services only", []string{"manifests", "--mode", "waypoint", "--waypoint-service", "shop/cart", "--waypoint-service", "shop/api"}, exitOK,
			append(append([]string{}, base...), "AuthorizationPolicy"),
			[]string{"  targetRefs:\n  - kind: Service\n    name: api\n  - kind: Service\n    name: cart\n", "namespace: shop\n"}},
		{"waypoint namespaces and name", []string{"manifests", "--mode", "waypoint", "--waypoint-namespace", "shop", "--waypoint-namespace", "billing",
			"--waypoint-name", "edge"}, exitOK, append(append([]string{}, base...), "AuthorizationPolicy", "AuthorizationPolicy"),
			[]string{"namespace: billing\n", "namespace: shop\n", "name: edge\n"}},
		{"waypoint istio operator", []string{"manifests", "--mode", "waypoint", "--part", "istio-operator"}, exitOK, []string{"IstioOperator"},
			[]string{"name: meshwaf\n", "service: meshwaf.meshwaf-system.svc.cluster.local"}},
		{"waypoint default cleared", []string{"manifests", "--mode", "waypoint", "--waypoint-namespace", "", "--waypoint-service", "shop/cart"}, exitOK,
			append(append([]string{}, base...), "AuthorizationPolicy"), []string{"namespace: shop\n"}},
		{"waypoint nothing to inspect", []string{"manifests", "--mode", "waypoint", "--waypoint-namespace", ""}, exitUsage, nil,
			[]string{"name at least one to inspect"}},
		{"waypoint bad service", []string{"manifests", "--mode", "waypoint", "--waypoint-service", "cart"}, exitUsage, nil,
			[]string{`--waypoint-service "cart": want NAMESPACE/NAME`}},
		{"waypoint profile route", []string{"manifests", "--mode", "waypoint", "--part", "profile-route"}, exitUsage, nil,
			[]string{"EnvoyFilter is unsupported on waypoints"}},
		{"bad mode", []string{"manifests", "--mode", "sidecar"}, exitUsage, nil, []string{`--mode "sidecar": want mesh, envoyfilter, pod or waypoint`}},
		{"bad part", []string{"manifests", "--part", "all"}, exitUsage, nil, []string{`--part "all"`}},
		{"part of another mode", []string{"manifests", "--mode", "envoyfilter", "--part", "istio-operator"}, exitUsage, nil,
			[]string{"needs no extension provider"}},
		{"one replica", []string{"manifests", "--replicas", "1", "--max-replicas", "1"}, exitUsage, nil, []string{"want at least 2"}},
		{"kustomize tree validates too", []string{"manifests", "--kustomize", t.TempDir(), "--replicas", "1", "--max-replicas", "1"}, exitUsage, nil,
			[]string{"want at least 2"}},
		{"bad label", []string{"manifests", "--opt-in-label", "inspect"}, exitUsage, nil, []string{"want KEY=VALUE"}},
		{"no timeout", []string{"manifests", "--timeout", "0s"}, exitUsage, nil, []string{"600s"}},
		{"stray argument", []string{"manifests", "mesh"}, exitUsage, nil, []string{"unexpected arguments"}},
		{"help", []string{"manifests", "-h"}, exitOK, nil, []string{"--kustomize DIR", "--fail-open"}}, // help goes to stdout
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", tt.args...)
			require.Equal(t, tt.wantCode, code, "stdout: %s\nstderr: %s", stdout, stderr)
			out := stdout
			if code != exitOK {
				out = stderr
			}
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
			if tt.wantKinds != nil {
				_, kinds := yamlDocs(t, stdout)
				require.Equal(t, tt.wantKinds, kinds)
			}
		})
	}
	_, stdout, _ := runCLI(t, "", "manifests", "--exclude-path", "")
	require.NotContains(t, stdout, "notPaths", "an empty --exclude-path checks every request")
}

// Every rendered config is one that serve loads strictly and compiles,
// with a body limit no smaller than what Envoy sends.
func TestManifestsConfigLoads(t *testing.T) {
	for _, args := range [][]string{
		{"manifests"},
		{"manifests", "--mode", "pod", "--part", "pod-patch"},
		{"manifests", "--fail-open", "--status-on-error", "503", "--max-request-bytes", "4096", "--request-body-limit", "8192", "--metrics-port", "9191"},
	} {
		code, stdout, stderr := runCLI(t, "", args...)
		require.Equal(t, exitOK, code, stderr)
		docs, kinds := yamlDocs(t, stdout)
		i := indexOf(kinds, "ConfigMap")
		require.GreaterOrEqual(t, i, 0)
		data := docs[i]["data"].(map[string]any)[install.ConfigKey].(string)
		cfg := defaultConfig()
		require.NoError(t, decodeConfig(install.ConfigPath, []byte(data), &cfg), "%s", data)
		_, err := inspector.Compile(cfg.DefaultProfile)
		require.NoError(t, err)
		fs := flagValues(args)
		require.Equal(t, fs["fail-open"] == "true", cfg.FailOpen)
		if s := fs["status-on-error"]; s != "" {
			require.Equal(t, s, strconv.Itoa(cfg.FailureStatus))
		}
		if l := fs["request-body-limit"]; l != "" {
			require.Equal(t, l, strconv.Itoa(cfg.DefaultProfile.RequestBodyLimit))
		}
		if p := fs["metrics-port"]; p != "" {
			require.Equal(t, ":"+p, cfg.AdminAddress)
		}
		if fs["mode"] == "pod" {
			require.Equal(t, "127.0.0.1:9000", cfg.GRPCAddress, "pod mode: gRPC on loopback only")
		} else {
			require.Equal(t, ":9000", cfg.GRPCAddress)
		}
		require.Greater(t, int64(30), int64((cfg.DrainDelay+cfg.ShutdownTimeout)/1e9), "terminationGracePeriodSeconds 30 covers the drain")
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// flagValues maps --name value and --bool flags of args.
func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") {
			continue
		}
		name := strings.TrimPrefix(args[i], "--")
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			m[name] = args[i+1]
			i++
		} else {
			m[name] = "true"
		}
	}
	return m
}
