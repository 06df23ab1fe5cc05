package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/install"
	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// TestSharedDefaults pins the values the binary, the install and the
// segmentation graph must agree on (internal/defaults) in every package
// that exposes one and in the checked-in manifests users apply.
func TestSharedDefaults(t *testing.T) {
	// The packages.
	require.Equal(t, defaults.ProfileContextKey, extauthz.ContextKeyProfile)
	require.Equal(t, defaults.ProfileContextKey, install.ProfileContextKey)
	require.Equal(t, "meshwaf-profile", defaults.ProfileContextKey, "documented in the README")
	for _, port := range []int{install.DefaultGRPCPort, meshpolicy.DefaultGRPCPort} {
		require.Equal(t, defaults.GRPCPort, port)
	}
	for _, port := range []int{install.DefaultMetricsPort, meshpolicy.DefaultMetricsPort} {
		require.Equal(t, defaults.AdminPort, port)
	}
	require.Equal(t, defaults.RequestBodyLimit, inspector.DefaultRequestBodyLimit)
	require.Equal(t, defaults.RequestBodyLimit, install.DefaultRequestBodyLimit)
	require.Equal(t, install.DefaultMeshwafNamespace, meshpolicy.DefaultMeshwafNamespace, "the graph's meshwaf is where the install puts it")
	cfg := defaultConfig()
	require.Equal(t, defaults.GRPCAddress, cfg.GRPCAddress)
	require.Equal(t, defaults.AdminAddress, cfg.AdminAddress)
	require.Equal(t, Duration(defaults.ShutdownTimeout), cfg.ShutdownTimeout)

	// The checked-in manifests: the config serve loads, and the ports the
	// Deployment and the Service open.
	base := filepath.Join(manifestsDir, "base")
	var cm struct {
		Data map[string]string `json:"data"`
	}
	readYAML(t, filepath.Join(base, "configmap.yaml"), &cm)
	installed := defaultConfig()
	require.NoError(t, decodeConfig(install.ConfigPath, []byte(cm.Data[install.ConfigKey]), &installed))
	require.Equal(t, defaults.GRPCAddress, installed.GRPCAddress)
	require.Equal(t, defaults.AdminAddress, installed.AdminAddress)
	require.Equal(t, Duration(defaults.DrainDelay), installed.DrainDelay)
	require.Equal(t, Duration(defaults.ShutdownTimeout), installed.ShutdownTimeout)
	require.Equal(t, defaults.RequestBodyLimit, installed.DefaultProfile.RequestBodyLimit)

	type port struct {
		Port          int `json:"port"`
		ContainerPort int `json:"containerPort"`
	}
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds int `json:"terminationGracePeriodSeconds"`
					Containers                    []struct {
						Ports []port `json:"ports"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	readYAML(t, filepath.Join(base, "deployment.yaml"), &dep)
	pod := dep.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	require.Equal(t, []port{{ContainerPort: defaults.GRPCPort}, {ContainerPort: defaults.AdminPort}}, pod.Containers[0].Ports)
	require.Greater(t, time.Duration(pod.TerminationGracePeriodSeconds)*time.Second, defaults.DrainDelay+defaults.ShutdownTimeout,
		"the grace period covers the drain")
	var svc struct {
		Spec struct {
			Ports []port `json:"ports"`
		} `json:"spec"`
	}
	readYAML(t, filepath.Join(base, "service.yaml"), &svc)
	require.Equal(t, []port{{Port: defaults.GRPCPort}, {Port: defaults.AdminPort}}, svc.Spec.Ports)

	// The per-route profile example names the key extauthz reads.
	var route struct {
		Spec struct {
			ConfigPatches []struct {
				Patch struct {
					Value struct {
						PerFilter map[string]struct {
							CheckSettings struct {
								ContextExtensions map[string]string `json:"context_extensions"`
							} `json:"check_settings"`
						} `json:"typed_per_filter_config"`
					} `json:"value"`
				} `json:"patch"`
			} `json:"configPatches"`
		} `json:"spec"`
	}
	readYAML(t, filepath.Join(manifestsDir, "overlays", "envoyfilter", "profile-route-example.yaml"), &route)
	require.Len(t, route.Spec.ConfigPatches, 1)
	ext := route.Spec.ConfigPatches[0].Patch.Value.PerFilter["envoy.filters.http.ext_authz"].CheckSettings.ContextExtensions
	require.Contains(t, ext, defaults.ProfileContextKey)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}
