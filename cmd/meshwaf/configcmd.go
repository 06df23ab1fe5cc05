package main

import (
	"context"
	"errors"
	"io"
)

// configCommand is `meshwaf config validate FILE` (profiles issue).
func configCommand(_ context.Context, _ []string, _, _ io.Writer) error {
	return usageError{errors.New("config: not built yet")}
}
