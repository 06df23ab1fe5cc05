package main

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// listFlag is the one repeatable string flag: values in order, as given;
// given at all, it replaces the initial values; nonEmpty drops empty ones.
func TestListFlag(t *testing.T) {
	tests := []struct {
		name     string
		initial  []string
		args     []string
		vals     []string
		nonEmpty []string
	}{
		{"not given", []string{"/healthz"}, nil, []string{"/healthz"}, []string{"/healthz"}},
		{"replaces the initial values", []string{"/healthz"}, []string{"-x", "/a", "-x", "/b"}, []string{"/a", "/b"}, []string{"/a", "/b"}},
		{"empty clears", []string{"/healthz"}, []string{"-x", ""}, []string{""}, nil},
		{"repeated, no initial values", nil, []string{"-x", "A: 1", "-x", "A: 1"}, []string{"A: 1", "A: 1"}, []string{"A: 1", "A: 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			l := &listFlag{vals: tt.initial}
			fs.Var(l, "x", "")
			require.NoError(t, fs.Parse(tt.args))
			require.Equal(t, tt.vals, l.vals)
			require.Equal(t, tt.nonEmpty, l.nonEmpty())
		})
	}
}
