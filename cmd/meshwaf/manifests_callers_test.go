package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestManifestsCallerNamespace(t *testing.T) {
	code, stdout, stderr := runCLI(t, "", "manifests", "--mode", "mesh", "--caller-namespace", "default", "--caller-namespace", "payments")
	require.Equal(t, exitOK, code, stderr)
	i := strings.Index(stdout, "name: meshwaf-callers")
	require.Positive(t, i, "the caller policy is rendered")
	doc := stdout[i:]
	if j := strings.Index(doc, "\n---"); j > 0 {
		doc = doc[:j]
	}
	require.Contains(t, doc, "- default\n")
	require.Contains(t, doc, "- payments\n")
	require.NotContains(t, doc, `- '*'`)

	code, _, stderr = runCLI(t, "", "manifests", "--mode", "mesh", "--caller-namespace", "Bad_NS")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `caller namespace "Bad_NS"`)
}
