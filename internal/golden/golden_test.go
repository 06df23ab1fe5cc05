package golden

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder is a testing.TB that records a failure instead of failing.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) FailNow()              { r.failed = true; runtime.Goexit() }

// fails runs f with a recorder and reports whether it failed.
func fails(t *testing.T, f func(tb testing.TB)) bool {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.failed
}

// withUpdate runs f as if the tests ran with -update.
func withUpdate(t *testing.T, f func()) {
	t.Helper()
	*update = true
	defer func() { *update = false }()
	f()
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, b := range files {
		dst := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, []byte(b), 0o644))
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.yaml")
	write(t, dir, map[string]string{"a.yaml": "kind: A\n"})
	tests := []struct {
		name string
		path string
		got  string
		fail bool
	}{
		{"equal", p, "kind: A\n", false},
		{"differs", p, "kind: B\n", true},
		{"one byte more", p, "kind: A\n\n", true},
		{"missing file", filepath.Join(dir, "b.yaml"), "kind: A\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.fail, fails(t, func(tb testing.TB) { tb.Helper(); Check(tb, tt.path, []byte(tt.got)) }))
		})
	}
	require.False(t, Update())
	withUpdate(t, func() {
		require.True(t, Update())
		q := filepath.Join(dir, "new", "c.yaml")
		require.False(t, fails(t, func(tb testing.TB) { tb.Helper(); Check(tb, q, []byte("kind: C\n")) }))
		b, err := os.ReadFile(q)
		require.NoError(t, err)
		require.Equal(t, "kind: C\n", string(b), "-update writes the file")
	})
}

func TestCheckTree(t *testing.T) {
	owned := func(p string) bool { return strings.HasPrefix(p, "base/") }
	start := map[string]string{"base/a.yaml": "a\n", "base/b.yaml": "b\n", "README.md": "not owned\n"}
	tests := []struct {
		name string
		got  map[string][]byte
		fail bool
	}{
		{"equal", map[string][]byte{"base/a.yaml": []byte("a\n"), "base/b.yaml": []byte("b\n")}, false},
		{"differs", map[string][]byte{"base/a.yaml": []byte("a\n"), "base/b.yaml": []byte("B\n")}, true},
		{"missing in the tree", map[string][]byte{"base/a.yaml": []byte("a\n"), "base/b.yaml": []byte("b\n"), "base/c.yaml": []byte("c\n")}, true},
		{"not produced", map[string][]byte{"base/a.yaml": []byte("a\n")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, start)
			require.Equal(t, tt.fail, fails(t, func(tb testing.TB) { tb.Helper(); CheckTree(tb, root, tt.got, owned) }))
		})
	}
	root := t.TempDir()
	write(t, root, start)
	got := map[string][]byte{"base/a.yaml": []byte("A\n"), "base/sub/c.yaml": []byte("c\n")}
	withUpdate(t, func() {
		require.False(t, fails(t, func(tb testing.TB) { tb.Helper(); CheckTree(tb, root, got, owned) }))
	})
	require.Equal(t, map[string][]byte{"base/a.yaml": []byte("A\n"), "base/sub/c.yaml": []byte("c\n"), "README.md": []byte("not owned\n")},
		ReadTree(t, root), "-update rewrites and removes owned files and keeps the rest")
}
