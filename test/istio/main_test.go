package istiotest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Shared by every test: the repository root and the binary scripts/build.sh
// built, the one that ships.
var env struct {
	repo    string
	meshwaf string
}

func TestMain(m *testing.M) {
	os.Exit(mainRun(m))
}

func mainRun(m *testing.M) int {
	repo, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "meshwaf-istio-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.repo = repo
	env.meshwaf = filepath.Join(dir, "meshwaf")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := run(ctx, repo, filepath.Join(repo, "scripts", "build.sh"), env.meshwaf); err != nil {
		fmt.Fprintln(os.Stderr, "test/istio: building meshwaf:", err)
		return 1
	}
	return m.Run()
}

func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// meshwaf runs the built binary from the repo root and returns its stdout.
func meshwaf(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, env.repo, env.meshwaf, args...)
	if err != nil {
		t.Fatalf("meshwaf %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}
