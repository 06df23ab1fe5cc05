package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/install"
	mwversion "github.com/meshwaf/meshwaf/internal/version"
)

// dockerfile is the repository's Dockerfile as instructions: continuation
// lines joined, comments and blank lines dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	require.NoError(t, err)
	var out []string
	cur := ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		out = append(out, cur+trimmed)
		cur = ""
	}
	return out
}

// The image builds by construction: every base is pinned or empty, it runs
// as a numeric non-root user, names no registry host, and is labelled with
// the version it stamps into the binary.
func TestDockerfile(t *testing.T) {
	lines := dockerfile(t)
	args := map[string]string{} // global ARGs and their defaults
	stages := map[string]bool{}
	var finals []int // index of the FROM of each runtime stage
	for i, l := range lines {
		kw, rest, _ := strings.Cut(l, " ")
		switch kw {
		case "ARG":
			if len(stages) == 0 && len(finals) == 0 {
				name, def, ok := strings.Cut(rest, "=")
				require.True(t, ok, "global ARG %s has a default, so a plain docker build works", rest)
				args[name] = def
			}
		case "FROM":
			f := strings.Fields(rest)
			image := f[0]
			if m := regexp.MustCompile(`^\$\{(\w+)\}$`).FindStringSubmatch(image); m != nil {
				def, ok := args[m[1]]
				require.True(t, ok, "FROM %s: no global ARG %s", image, m[1])
				image = def
			}
			switch {
			case image == "scratch":
				finals = append(finals, i)
			case stages[image]:
			default:
				// A short name with a patch-pinned tag: pullable on a default set-up.
				require.Regexp(t, `^[a-z0-9]+:\d+\.\d+\.\d+(-[a-z0-9]+)?$`, image, "FROM %s", rest)
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			}
		}
		// No registry host: nothing like host.tld/ or host:port/ in an image.
		require.NotRegexp(t, `[a-z0-9-]+\.[a-z]{2,}(:\d+)?/[a-z0-9]`, l, "names a registry host")
	}
	require.Equal(t, mwversion.Release, args["VERSION"], "the Dockerfile's VERSION default is internal/version/VERSION")
	require.Len(t, finals, 2, "the accelerated and the default image")
	require.Equal(t, "FROM scratch", lines[len(lines)-1-indexFromEnd(lines, "FROM ")], "the default target is the last stage")
	for n, start := range finals {
		end := len(lines)
		if n+1 < len(finals) {
			end = finals[n+1]
		}
		stage := strings.Join(lines[start:end], "\n")
		require.Contains(t, stage, "\nARG VERSION\n", lines[start])
		require.Contains(t, stage, `org.opencontainers.image.version="${VERSION}"`, lines[start])
		require.Regexp(t, `(?m)^USER 65532:65532$`, stage, lines[start])
		require.Contains(t, stage, `ENTRYPOINT ["/meshwaf"]`, lines[start])
	}
	require.Contains(t, strings.Join(lines, "\n"), `RUN scripts/build.sh /out/meshwaf "${VERSION}" nodoctor`, "the image runs CI's build, without doctor")
}

// indexFromEnd is how many instructions after the last one starting with
// prefix there are.
func indexFromEnd(lines []string, prefix string) int {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return len(lines) - 1 - i
		}
	}
	return -1
}

// One version everywhere: the VERSION file, the build script's default,
// the default image tag of the manifests and what they render.
func TestVersionStamp(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "internal", "version", "VERSION"))
	require.NoError(t, err)
	v := strings.TrimSpace(string(raw))
	require.Regexp(t, `^v\d+\.\d+\.\d+$`, v)
	require.Equal(t, v, mwversion.Release)

	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "build.sh"))
	require.NoError(t, err)
	require.Contains(t, string(script), `version=${2:-$(cat "$root/internal/version/VERSION")}`)
	require.Contains(t, string(script), "-X main.buildVersion=${version}")

	require.Equal(t, "meshwaf:"+v, install.DefaultImage)
	deploy, err := os.ReadFile(filepath.Join(manifestsDir, "base", "deployment.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(deploy), "image: meshwaf:"+v+"\n")
	require.Contains(t, string(deploy), "version: "+v+"\n")

	// Unstamped (go build, go run): the release with -dev, never a bare "dev".
	require.Equal(t, v+"-dev", version())
}
