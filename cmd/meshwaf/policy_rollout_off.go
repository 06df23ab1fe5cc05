//go:build nodoctor

package main

import (
	"context"
	"errors"
	"io"
)

// errNoRollout: like doctor, policy diff, apply and promote talk to the
// API server through client-go, which the server image leaves out.
var errNoRollout = errors.New("this meshwaf binary is built without the cluster commands (-tags nodoctor, like the server image); " +
	"run policy diff, apply and promote from a binary built with go install or go run (github.com/meshwaf/meshwaf/cmd/meshwaf)")

func policyDiff(context.Context, []string, io.Reader, io.Writer) error    { return errNoRollout }
func policyApply(context.Context, []string, io.Reader, io.Writer) error   { return errNoRollout }
func policyPromote(context.Context, []string, io.Reader, io.Writer) error { return errNoRollout }
