package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"istio.io/api/annotation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// notServed are API groups whose objects are not for the API server:
// meshwaf's own ServiceGraph, the IstioOperator overlay for
// `istioctl install -f` (checked by istioctl instead), kustomize's files.
var notServed = []string{"meshwaf.io", "install.istio.io", "kustomize.config.k8s.io"}

func served(u *unstructured.Unstructured) bool {
	return !slices.Contains(notServed, u.GroupVersionKind().Group)
}

// accept checks that the API server accepts every object of one rendered
// output. Namespaces (named by a Namespace object or by an object's
// metadata.namespace) are created for real first; every other object gets a
// server-side create, a dry run unless stored is set, with strict field
// validation. Every rejection is reported, not only the first. It returns
// the objects the server was asked to take.
func accept(t *testing.T, source string, objs []*unstructured.Unstructured, stored bool) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.cluster

	var todo []*unstructured.Unstructured
	for _, u := range objs {
		switch {
		case !served(u):
			t.Logf("%s: %s: not an API server object, left to istioctl", source, objectName(u))
		case u.GetKind() == "Namespace" && u.GetAPIVersion() == "v1":
			warns, err := c.create(ctx, u, false)
			if apierrors.IsAlreadyExists(err) {
				// Created by an earlier output: check this one still validates.
				warns, err = c.create(ctx, withName(u, u.GetName()+"-dry-run-check"), true)
			}
			report(t, source, u, warns, err)
		default:
			if ns := u.GetNamespace(); ns != "" {
				if err := c.ensureNamespace(ctx, ns); err != nil {
					t.Fatalf("%s: namespace %s: %v", source, ns, err)
				}
			}
			todo = append(todo, u)
		}
	}
	for _, u := range todo {
		warns, err := c.create(ctx, u, !stored)
		if apierrors.IsAlreadyExists(err) {
			if stored {
				t.Logf("%s: %s: already stored by an earlier output", source, objectName(u))
				continue
			}
			// Another test stored an object of this name: validate a
			// renamed copy, which differs only in the name.
			warns, err = c.create(ctx, withName(u, u.GetName()+"-2"), true)
		}
		report(t, source, u, warns, err)
	}
	return todo
}

func withName(u *unstructured.Unstructured, name string) *unstructured.Unstructured {
	c := u.DeepCopy()
	c.SetName(name)
	return c
}

func report(t *testing.T, source string, u *unstructured.Unstructured, warns []string, err error) {
	t.Helper()
	for _, w := range warns {
		t.Logf("%s: %s: API server warning: %s", source, objectName(u), w)
	}
	if err != nil {
		t.Errorf("%s: %s rejected: %v", source, objectName(u), err)
	}
}

// istioctlValidate runs `istioctl validate` (Istio's own validation of its
// kinds, including IstioOperator) over one rendered output.
func istioctlValidate(t *testing.T, source string, data []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := run(ctx, env.repo, env.tools.istioctl, "validate", "--kubeconfig", env.cluster.kubeconfig, "-f", f)
	if err != nil {
		t.Errorf("%s: istioctl validate: %v\nstdout:\n%s", source, err, out)
		return
	}
	if msg := strings.TrimSpace(string(out) + string(stderr)); msg != "" {
		t.Logf("%s: istioctl validate:\n%s", source, msg)
	}
}

// The graph the segmentation issue ships as its example.
const shopGraph = "examples/shop-graph.yaml"

func TestPolicyGenerateAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		kinds []string // kinds the output must consist of
	}{
		{"istio", nil, []string{"AuthorizationPolicy"}},
		{"istio-dry-run", []string{"--dry-run"}, []string{"AuthorizationPolicy"}},
		{"networkpolicy", []string{"--format", "networkpolicy"}, []string{"NetworkPolicy"}},
		{"networkpolicy-dry-run", []string{"--format", "networkpolicy", "--dry-run"}, []string{"NetworkPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"policy", "generate", "-f", shopGraph}, tc.args...)
			data := meshwaf(t, args...)
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("meshwaf %s: output is not YAML objects: %v", strings.Join(args, " "), err)
			}
			if len(objs) == 0 {
				t.Fatalf("meshwaf %s: no objects", strings.Join(args, " "))
			}
			for _, u := range objs {
				if !slices.Contains(tc.kinds, u.GetKind()) {
					t.Errorf("%s: unexpected kind in a %s output", objectName(u), tc.name)
				}
				if u.GetLabels()["app.kubernetes.io/managed-by"] != "meshwaf" {
					t.Errorf("%s: no app.kubernetes.io/managed-by: meshwaf label", objectName(u))
				}
				if slices.Contains(tc.args, "--dry-run") && u.GetKind() == "AuthorizationPolicy" &&
					u.GetAnnotations()[annotation.IoIstioDryRun.Name] != "true" {
					t.Errorf("%s: --dry-run output without %s: \"true\"", objectName(u), annotation.IoIstioDryRun.Name)
				}
			}
			accept(t, "policy generate "+tc.name, objs, false)
			if !strings.HasPrefix(tc.name, "networkpolicy") {
				istioctlValidate(t, "policy generate "+tc.name, data)
			}
		})
	}
}

var modes = []string{"mesh", "envoyfilter", "pod"}

func TestManifestsAccepted(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			data := meshwaf(t, "manifests", "--mode", mode)
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("meshwaf manifests --mode %s: output is not YAML objects: %v", mode, err)
			}
			if len(objs) == 0 {
				t.Fatalf("meshwaf manifests --mode %s: no objects", mode)
			}
			accept(t, "manifests --mode "+mode, objs, false)
			istioctlValidate(t, "manifests --mode "+mode, data)
		})
	}
}

// TestManifestsDirAccepted applies the plain files under manifests/: for a
// directory with a kustomization.yaml, the files it lists as resources
// (patches are partial objects and are built by the kustomize test); for
// any other directory, every YAML file.
func TestManifestsDirAccepted(t *testing.T) {
	root := filepath.Join(env.repo, "manifests")
	files, err := manifestFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML files under %s", root)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(env.repo, f)
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			accept(t, rel, objs, false)
			istioctlValidate(t, rel, data)
		})
	}
}

// manifestFiles lists the object files under root (see
// TestManifestsDirAccepted).
func manifestFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		k, err := os.ReadFile(filepath.Join(p, "kustomization.yaml"))
		if os.IsNotExist(err) {
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if !e.IsDir() && isYAML(e.Name()) {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
		var kust struct {
			Resources []string `json:"resources"`
		}
		if err := yaml.Unmarshal(k, &kust); err != nil {
			return err
		}
		for _, r := range kust.Resources {
			f := filepath.Join(p, r)
			if st, err := os.Stat(f); err == nil && !st.IsDir() && isYAML(f) {
				files = append(files, f)
			}
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil, nil
	}
	slices.Sort(files)
	return slices.Compact(files), err
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}
