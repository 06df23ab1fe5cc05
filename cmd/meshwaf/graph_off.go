//go:build nodoctor

package main

import (
	"context"
	"errors"
	"io"
)

// errNoDiscover: like doctor, graph discover reads the cluster through
// client-go, which the server image (-tags nodoctor) leaves out.
var errNoDiscover = errors.New("this meshwaf binary is built without graph discover (-tags nodoctor, like the server image); " +
	"run it from a binary built with go install or go run (github.com/meshwaf/meshwaf/cmd/meshwaf)")

func graphCommand(context.Context, []string, io.Writer, io.Writer) error {
	return errNoDiscover
}
