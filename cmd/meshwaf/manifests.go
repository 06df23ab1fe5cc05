package main

import (
	"context"
	"errors"
	"io"
)

// manifestsCommand is `meshwaf manifests --mode mesh|envoyfilter|pod` (install issue).
func manifestsCommand(_ context.Context, _ []string, _, _ io.Writer) error {
	return usageError{errors.New("manifests: not built yet")}
}
