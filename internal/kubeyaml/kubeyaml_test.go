package kubeyaml

import (
	"testing"

	"github.com/stretchr/testify/require"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMarshal(t *testing.T) {
	ap := &securityv1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "allow-nothing", Namespace: "shop", Labels: map[string]string{ManagedByLabel: ManagedBy}},
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"meshwaf.io/inspect": "enabled"}},
		},
	}
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	out, err := Marshal(ap, ns)
	require.NoError(t, err)
	want := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  labels:
    app.kubernetes.io/managed-by: meshwaf
  name: allow-nothing
  namespace: shop
spec:
  selector:
    matchLabels:
      meshwaf.io/inspect: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
spec: {}
`
	require.Equal(t, want, string(out))
	again, err := Marshal(ap, ns)
	require.NoError(t, err)
	require.Equal(t, out, again)
}

// MarshalCompact drops status, nulls and empty objects, and keeps empty
// lists and zero values.
func TestMarshalCompact(t *testing.T) {
	obj := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "x", "creationTimestamp": nil, "labels": map[string]any{}},
		"spec":     map[string]any{"empty": []any{}, "zero": 0, "off": false, "gone": nil, "nested": map[string]any{"gone": nil}},
		"status":   map[string]any{"phase": "Active"},
	}
	out, err := MarshalCompact(obj)
	require.NoError(t, err)
	require.Equal(t, `apiVersion: v1
kind: ConfigMap
metadata:
  name: x
spec:
  empty: []
  "off": false
  zero: 0
`, string(out))
}
