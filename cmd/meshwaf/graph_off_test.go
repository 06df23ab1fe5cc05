//go:build nodoctor

package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDiscoverLeftOut: the nodoctor build answers `meshwaf graph discover`
// with an error that says where it is (client-go is left out with doctor).
func TestDiscoverLeftOut(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runMain(context.Background(), []string{"graph", "discover"}, nil, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, errOut.String(), "built without graph discover")
}
