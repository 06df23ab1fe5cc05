//go:build nodoctor

package main

import (
	"context"
	"errors"
	"io"
)

// errNoDoctor: the server image is built without doctor (-tags nodoctor):
// client-go's type registrations would cost every meshwaf server about
// 15 MiB of memory for a command that runs on an operator's machine.
var errNoDoctor = errors.New("this meshwaf binary is built without doctor (-tags nodoctor, like the server image); " +
	"run doctor from a binary built with go install or go run (github.com/meshwaf/meshwaf/cmd/meshwaf)")

func doctorCommand(context.Context, []string, io.Writer, io.Writer) (bool, error) {
	return false, errNoDoctor
}
