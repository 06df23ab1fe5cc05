package main

import (
	"context"
	"errors"
	"io"
)

// policyCommand is `meshwaf policy generate|verify` (segmentation issue).
func policyCommand(_ context.Context, _ []string, _ io.Reader, _, _ io.Writer) error {
	return usageError{errors.New("policy: not built yet")}
}
