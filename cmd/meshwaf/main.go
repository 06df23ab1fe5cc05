// Command meshwaf is the meshwaf binary: `serve` runs the Envoy ext_authz
// gRPC service, `inspect` evaluates one request offline, `doctor` checks a
// live cluster, `version` prints versions. Only main exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1 // runtime failure
	exitUsage  = 2 // bad flags or configuration
	exitDenied = 3 // `inspect`: the request would be denied
	// exitFindings: `doctor` found something at least --fail-on (default
	// error: inspection is blocked or not set up for something).
	exitFindings = 3
	// exitDrift (policy_rollout.go): `policy diff` found drift, `policy
	// promote` refused.
)

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

// statusError is an outcome, not a failure, that exits with code.
type statusError struct {
	code int
	err  error
}

func (e statusError) Error() string { return e.err.Error() }
func (e statusError) Unwrap() error { return e.err }

// usageError marks errors in flags or configuration (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := runMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `meshwaf: OWASP CRS inspection for Envoy's ext_authz in an Istio mesh.

Usage:
  meshwaf serve [flags]                         run the ext_authz gRPC service
  meshwaf inspect [flags]                       evaluate one request offline, print the verdict
  meshwaf config validate FILE...               load and compile config files as serve would
  meshwaf policy generate -f GRAPH [flags]      AuthorizationPolicies (or NetworkPolicies) from a service graph
  meshwaf policy verify --graph GRAPH -f FILE   check policies against the graph
  meshwaf policy diff|apply|promote -f GRAPH    a live cluster: drift, server-side apply in stages, promotion
  meshwaf graph discover [flags]                a service graph from Istio's metrics and the Kubernetes API
  meshwaf manifests --mode MODE                install objects for Istio: mesh, envoyfilter, pod, waypoint (ambient)
  meshwaf tune [-f FILE] [flags]                exclusions for the false positives in audit lines
  meshwaf doctor [flags]                        check a live cluster's meshwaf install: findings with codes and fixes
  meshwaf version                               print versions
  meshwaf help [COMMAND]                        this list, or a command's description, examples and flags

Run 'meshwaf help <command>' or 'meshwaf <command> --help' for a command's description, examples and flags.
`

func runMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCommand(ctx, args[1:], stdout, stderr)
	case "inspect":
		var denied bool
		denied, err = inspectCommand(ctx, args[1:], stdin, stdout, stderr)
		if err == nil && denied {
			return exitDenied
		}
	case "config":
		err = configCommand(ctx, args[1:], stdout, stderr)
	case "policy":
		err = policyCommand(ctx, args[1:], stdin, stdout, stderr)
	case "manifests":
		err = manifestsCommand(ctx, args[1:], stdout, stderr)
	case "graph":
		err = graphCommand(ctx, args[1:], stdout, stderr)
	case "tune":
		err = tuneCommand(ctx, args[1:], stdin, stdout)
	case "doctor":
		var found bool
		found, err = doctorCommand(ctx, args[1:], stdout, stderr)
		if err == nil && found {
			return exitFindings
		}
	case "version":
		err = versionCommand(args[1:], stdout)
	case "--version", "-version":
		err = versionCommand(nil, stdout)
	case "help":
		err = helpCommand(args[1:], stdout)
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "meshwaf: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(statusError)):
		var se statusError
		errors.As(err, &se)
		fmt.Fprintf(stderr, "meshwaf %s: %v\n", args[0], err)
		return se.code
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "meshwaf %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "meshwaf %s: %v\n", args[0], err)
		return exitError
	}
}
