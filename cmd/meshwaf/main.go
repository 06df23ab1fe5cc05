// Command meshwaf is the meshwaf binary: `serve` runs the Envoy ext_authz
// gRPC service, `inspect` evaluates one request offline, `version` prints
// versions. Only main exits.
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
)

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
  meshwaf manifests --mode mesh|envoyfilter|pod install objects for Istio
  meshwaf version                               print versions

Run 'meshwaf <command> -h' for the flags of a command.
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
	case "version", "--version", "-version":
		err = versionCommand(stdout)
	case "help", "-h", "--help", "-help":
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
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "meshwaf %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "meshwaf %s: %v\n", args[0], err)
		return exitError
	}
}
