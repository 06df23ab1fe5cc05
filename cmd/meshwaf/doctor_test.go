//go:build !nodoctor

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/cluster"
	"github.com/meshwaf/meshwaf/install"
)

// The config file in the install's ConfigMap is read with serve's own
// decoder: its body limit, and the defaults for what it leaves out.
func TestParseMeshwafConfig(t *testing.T) {
	objs, err := install.Render(install.DefaultOptions(), install.ModeMesh, install.PartObjects)
	require.NoError(t, err)
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	var rendered string
	for _, doc := range bytes.Split(objs, []byte("\n---\n")) {
		require.NoError(t, yaml.Unmarshal(doc, &cm))
		if cm.Kind == "ConfigMap" {
			rendered = cm.Data[install.ConfigKey]
		}
	}
	require.NotEmpty(t, rendered, "the install's ConfigMap")

	tests := []struct {
		name    string
		data    string
		want    cluster.MeshwafConfig
		wantErr string
	}{
		{"installed", rendered, cluster.MeshwafConfig{RequestBodyLimit: install.DefaultRequestBodyLimit, QueueWait: 100 * time.Millisecond}, ""},
		{"partial bodies pass", "queueWait: 250ms\ndefaultProfile: {requestBodyLimit: 4096, allowPartialBody: true}\n",
			cluster.MeshwafConfig{RequestBodyLimit: 4096, AllowPartialBody: true, QueueWait: 250 * time.Millisecond}, ""},
		{"unknown key", "defaultProfile:\n  requestBodyLimt: 4096\n", cluster.MeshwafConfig{}, "meshwaf.yaml:2: defaultProfile.requestBodyLimt: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMeshwafConfig([]byte(tt.data))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// An empty cluster: nothing installed is an error finding (exit code 3
// from runMain), in text and in JSON.
func TestRunDoctorEmptyCluster(t *testing.T) {
	tgt := cluster.NewTarget(install.DefaultOptions())
	tgt.ParseConfig = parseMeshwafConfig
	k, i := kubefake.NewClientset(), istiofake.NewSimpleClientset()
	r := cluster.NewReader(cluster.Clients{Core: k.CoreV1(), Apps: k.AppsV1(), Security: i.SecurityV1(), Networking: i.NetworkingV1alpha3()}, nil)
	ro := cluster.ReadOptions{SkipHealth: true}

	var text bytes.Buffer
	found, err := runDoctor(context.Background(), r, tgt, ro, "text", cluster.SeverityError, &text)
	require.NoError(t, err)
	require.True(t, found)
	require.Contains(t, text.String(), "error   MW0001 ConfigMap istio-system/istio: no ConfigMap")
	require.Contains(t, text.String(), "error   MW0020 Deployment meshwaf-system/meshwaf:")
	require.Contains(t, text.String(), "        fix: ")

	var out bytes.Buffer
	_, err = runDoctor(context.Background(), r, tgt, ro, "json", cluster.SeverityError, &out)
	require.NoError(t, err)
	var fs []cluster.Finding
	require.NoError(t, json.Unmarshal(out.Bytes(), &fs))
	var got []cluster.Code
	for _, f := range fs {
		got = append(got, f.Code)
	}
	require.Equal(t, []cluster.Code{cluster.CodeMeshConfigMissing, cluster.CodeDeploymentMissing, cluster.CodeMeshwafConfigUnreadable,
		cluster.CodeHealthSkipped, cluster.CodeNoWorkloadOptedIn}, got)
	require.Equal(t, cluster.SeverityError, fs[0].Severity)
	require.Equal(t, cluster.Object{Kind: "ConfigMap", Namespace: "istio-system", Name: "istio"}, fs[0].Object)
}

func TestDoctorCommandErrors(t *testing.T) {
	// A kubeconfig naming a server nothing listens on: the cluster cannot
	// be read (exit code 1), not a finding.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
	code, stdout, stderr := runCLI(t, "", "doctor", "--kubeconfig", kc, "--request-timeout", "5s", "--skip-health")
	require.Equal(t, exitError, code, stdout)
	require.Contains(t, stderr, "meshwaf doctor: reading")

	code, _, stderr = runCLI(t, "", "doctor", "--kubeconfig", filepath.Join(t.TempDir(), "missing"))
	require.Equal(t, exitError, code)
	require.Contains(t, stderr, "kubeconfig")

	for _, args := range [][]string{{"-o", "yaml"}, {"--fail-on", "info"}, {"--opt-in-label", "nolabel"}, {"--grpc-port", "0"}, {"extra"}} {
		code, _, stderr := runCLI(t, "", append([]string{"doctor"}, args...)...)
		require.Equal(t, exitUsage, code, "%v: %s", args, stderr)
	}
}
