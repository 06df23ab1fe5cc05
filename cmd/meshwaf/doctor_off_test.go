//go:build nodoctor

package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDoctorLeftOut: the nodoctor build (the server image's) answers
// `meshwaf doctor` with an error that says where doctor is.
func TestDoctorLeftOut(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runMain(context.Background(), []string{"doctor"}, nil, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, errOut.String(), "built without doctor")
}
