// Package golden compares what tests produce with files kept under version
// control, and rewrites those files when the tests run with -update:
//
//	go test ./install -run TestInstallGolden -update
//
// It is for _test.go files only: importing it registers the -update flag
// on the command line of the test binary.
package golden

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// update is the one -update flag of every golden test.
var update = flag.Bool("update", false, "rewrite the golden files from what the tests produce")

// Update reports whether the tests run with -update.
func Update() bool { return *update }

// Check fails t unless the file at path holds exactly got. With -update it
// first writes got there, creating its directory.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755)) //nolint:gosec // a source tree others read
		require.NoError(t, os.WriteFile(path, got, 0o644))         //nolint:gosec // files under version control
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "%s: run the test with -update to write it", path)
	require.Equal(t, string(want), string(got), "%s differs; if intended, rerun the test with -update", path)
}

// CheckTree fails t unless the files under root that owned selects are
// exactly got: the same slash-separated paths relative to root, with the
// same bytes. Files owned does not select are neither compared nor
// touched. With -update it first removes the owned files got lacks and
// writes got.
func CheckTree(t testing.TB, root string, got map[string][]byte, owned func(path string) bool) {
	t.Helper()
	if *update {
		for p := range ReadTree(t, root) {
			if _, ok := got[p]; !ok && owned(p) {
				require.NoError(t, os.Remove(filepath.Join(root, filepath.FromSlash(p))))
			}
		}
		for p, b := range got {
			dst := filepath.Join(root, filepath.FromSlash(p))
			require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755)) //nolint:gosec // a source tree others read
			require.NoError(t, os.WriteFile(dst, b, 0o644))           //nolint:gosec // files under version control
		}
	}
	want := ReadTree(t, root)
	for p, g := range got {
		w, ok := want[p]
		require.True(t, ok, "%s is missing; if intended, rerun the test with -update", filepath.Join(root, p))
		require.Equal(t, string(w), string(g), "%s differs; if intended, rerun the test with -update", filepath.Join(root, p))
	}
	for p := range want {
		if _, ok := got[p]; !ok && owned(p) {
			require.Fail(t, "not produced by the test", "%s: remove it, or rerun the test with -update", filepath.Join(root, p))
		}
	}
}

// ReadTree returns every file under root by slash-separated path relative
// to root; it fails t when root cannot be read.
func ReadTree(t testing.TB, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p) //nolint:gosec // the test's own tree, not untrusted input
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	require.NoError(t, err)
	return files
}
