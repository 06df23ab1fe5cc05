package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Shared by every test of the package: one API server, one meshwaf build.
var (
	env struct {
		tools   tools
		repo    string // the repository root
		meshwaf string // the binary scripts/build.sh built
		cluster *cluster
		crds    int
	}
)

func TestMain(m *testing.M) {
	os.Exit(mainRun(m))
}

func mainRun(m *testing.M) int {
	// Missing tools fail the run, in CI or not: a module whose only
	// purpose is these checks must not report ok without running them.
	tl, err := toolsFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL test/cluster: no tools:", err)
		return 1
	}
	env.tools = tl
	if err := setUp(); err != nil {
		fmt.Fprintln(os.Stderr, "test/cluster: set-up:", err)
		if env.cluster != nil {
			env.cluster.stop()
		}
		return 1
	}
	code := m.Run()
	env.cluster.stop()
	if code == 0 {
		os.RemoveAll(env.cluster.dir)
	} else {
		fmt.Fprintf(os.Stderr, "test/cluster: server logs kept in %s\n", env.cluster.dir)
	}
	return code
}

func setUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	env.repo = repo
	dir, err := os.MkdirTemp("", "meshwaf-cluster-")
	if err != nil {
		return err
	}

	// The binary that ships: the same script CI and the Dockerfile run.
	env.meshwaf = filepath.Join(dir, "meshwaf")
	if _, _, err := run(ctx, repo, filepath.Join(repo, "scripts", "build.sh"), env.meshwaf); err != nil {
		return err
	}

	start := time.Now()
	c, err := startCluster(ctx, env.tools, dir)
	if err != nil {
		return err
	}
	env.cluster = c
	fmt.Printf("test/cluster: etcd and kube-apiserver ready at %s in %s\n", c.server, time.Since(start).Round(time.Millisecond))

	crdFile, err := istioCRDFile(ctx)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(crdFile)
	if err != nil {
		return err
	}
	if env.crds, err = c.installCRDs(ctx, data); err != nil {
		return err
	}
	fmt.Printf("test/cluster: %d Istio CRDs established from %s\n", env.crds, crdFile)
	return nil
}

// istioCRDFile is the Istio CRD bundle of the istio.io/api module this
// module requires (the API version meshwaf's istio.io/client-go types
// belong to).
func istioCRDFile(ctx context.Context) (string, error) {
	out, _, err := run(ctx, ".", "go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	if err != nil {
		return "", err
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("istio.io/api is not in the module cache: run go mod download")
	}
	return filepath.Join(dir, "kubernetes", "customresourcedefinitions.gen.yaml"), nil
}

// decodeObjects splits multi-document YAML (or JSON) into objects, skipping
// empty documents. A List is not expanded: meshwaf emits none.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d: no apiVersion or kind", i)
		}
		out = append(out, u)
	}
}

// meshwaf runs the built binary from the repo root and returns its stdout.
func meshwaf(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, stderr, err := run(ctx, env.repo, env.meshwaf, args...)
	if err != nil {
		t.Fatalf("meshwaf %s: %v", strings.Join(args, " "), err)
	}
	if len(stderr) > 0 {
		t.Logf("meshwaf %s: stderr:\n%s", strings.Join(args, " "), stderr)
	}
	return out
}

func objectName(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}
