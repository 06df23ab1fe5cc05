package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// commandDoc is the help page of one command, as `meshwaf help CMD` and
// `meshwaf CMD --help` print it: description, usage, examples, then the
// flags of the command's FlagSet.
type commandDoc struct {
	name     string // as typed: "serve", "policy generate"
	usage    string // usage lines, without "meshwaf "
	long     string
	examples string
}

var commandDocs = []commandDoc{
	{
		name:  "serve",
		usage: "serve [flags]",
		long: `Runs the ext_authz gRPC service: Envoy's Authorization/Check, gRPC health and
reflection on --grpc-address; /metrics, /healthz and /readyz on --admin-address.
Settings come from flags, then MESHWAF_* environment variables, then the --config
file, then the defaults. The config file is reloaded when it changes and on SIGHUP.
SIGTERM drains: health turns NOT_SERVING, checks in flight finish.
Exit code 2 on bad flags or configuration, 1 on other errors.`,
		examples: `  meshwaf serve
  meshwaf serve --config /etc/meshwaf/meshwaf.yaml
  MESHWAF_MODE=detect meshwaf serve --grpc-address 127.0.0.1:9000`,
	},
	{
		name:  "inspect",
		usage: "inspect [flags]",
		long: `Evaluates one request offline with the same rules and inspection as serve and
prints the verdict and the rules that matched. The request comes from --url, -H
and --data, or whole from --raw. Exits with exit code 3 when the request would be
denied, 0 when it is allowed or only detected, 2 on bad flags or configuration.`,
		examples: `  meshwaf inspect --url '/?id=1%27%20OR%20%271%27%3D%271'
  meshwaf inspect --url /api/v1/users -H 'Content-Type: application/json' --data '{"name":"Joe"}' -o json
  meshwaf inspect --raw request.http
  meshwaf inspect --config meshwaf.yaml --profile payments --url /pay`,
	},
	{
		name:  "config validate",
		usage: "config validate FILE...",
		long: `Loads and compiles config files strictly, as serve would, and prints every error
(unknown keys, invalid values, SecLang that does not compile), one per line as
FILE:LINE: FIELD: problem. Exits with 0 when every file is valid, 1 otherwise.`,
		examples: `  meshwaf config validate meshwaf.yaml
  meshwaf config validate staging.yaml production.yaml`,
	},
	{
		name:  "policy generate",
		usage: "policy generate -f GRAPH [flags]",
		long: `Writes the policies of a ServiceGraph as multi-document YAML to stdout: Istio
AuthorizationPolicies (default) or Kubernetes NetworkPolicies. With --egress, also
the callers' side: a Sidecar per service importing exactly its destinations, or
NetworkPolicy egress rules (with DNS and istiod).`,
		examples: `  meshwaf policy generate -f examples/shop-graph.yaml
  meshwaf policy generate -f examples/shop-graph.yaml --egress
  meshwaf policy generate -f graph.yaml --format networkpolicy | kubectl apply -f -`,
	},
	{
		name:  "policy verify",
		usage: "policy verify --graph GRAPH -f FILE [-f FILE|DIR...] [flags]",
		long: `Evaluates AuthorizationPolicies with Istio's semantics against a ServiceGraph,
prints the reachability matrix and every missing or extra flow (and every flow
allowed for other methods or paths than its edge's), and exits with 1 when the
policies do not allow exactly the graph's flows. Sidecars and NetworkPolicy
egress rules among the files are checked against each service's calls too.`,
		examples: `  meshwaf policy verify --graph examples/shop-graph.yaml -f policies.yaml
  kubectl get authorizationpolicies -A -o yaml | meshwaf policy verify --graph graph.yaml -f -`,
	},
	{
		name:  "policy diff",
		usage: "policy diff -f GRAPH [flags]",
		long: `Reads every AuthorizationPolicy of a live cluster and compares it with a
ServiceGraph: the flows the cluster allows that the graph does not and the reverse
(evaluated with Istio's semantics, as verify does); the graph's own policies
(labels app.kubernetes.io/managed-by: meshwaf and meshwaf.io/graph: NAME) that are
absent, edited by hand (spec compared field by field with what generate renders)
or no longer generated; and policies meshwaf does not own that change the outcome.
Exit code 0 without drift, 3 with drift, 1 on errors, 2 on bad flags.`,
		examples: `  meshwaf policy diff -f examples/shop-graph.yaml
  meshwaf policy diff -f graph.yaml --as-enforced -o json`,
	},
	{
		name:  "policy apply",
		usage: "policy apply -f GRAPH [--stage dry-run|enforce] [--dry-run=server] [flags]",
		long: `Server-side applies a ServiceGraph's AuthorizationPolicies (field manager
meshwaf) labelled app.kubernetes.io/managed-by: meshwaf and meshwaf.io/graph: NAME,
then prunes the graph's objects that are no longer generated. --stage dry-run (the
default) adds istio.io/dry-run: "true": the sidecars count what the policies would
deny and enforce nothing; promote enforces them. So that no step locks traffic out,
ALLOW policies go before each namespace's allow-nothing default-deny, and pruning
runs last. Only objects the graph owns are forced over other field managers or
pruned. Exit code 1 on errors, 2 on bad flags.`,
		examples: `  meshwaf policy apply -f examples/shop-graph.yaml --dry-run=server
  meshwaf policy apply -f examples/shop-graph.yaml --stage dry-run
  meshwaf policy apply -f graph.yaml --stage enforce --prune=false`,
	},
	{
		name:  "policy promote",
		usage: "policy promote -f GRAPH --prometheus URL [--stable-for 10m] [flags]",
		long: `Enforces a graph's policies staged with apply --stage dry-run: removes their
istio.io/dry-run annotation (ALLOW policies first, then the default-deny) only when
every one has been in dry-run for --stable-for and Prometheus shows the sidecars of
their namespaces reporting RBAC shadow counters with zero shadow denials over that
window. Otherwise it changes nothing, prints the shadow denials per pod and the
observed flows (Istio's standard metrics) the policies would deny, and exits with
code 3. Exit code 1 on errors, 2 on bad flags.`,
		examples: `  meshwaf policy promote -f examples/shop-graph.yaml --prometheus http://127.0.0.1:9090
  meshwaf policy promote -f graph.yaml --prometheus http://prometheus:9090 --stable-for 24h -o json`,
	},
	{
		name:  "graph discover",
		usage: "graph discover [--prometheus URL] [--lookback 7d] [--min-requests N] [--merge FILE] [flags]",
		long: `Writes a ServiceGraph of what the mesh observed to stdout: edges from Istio's
istio_requests_total and istio_tcp_connections_opened_total (reporter="destination")
in Prometheus over --lookback, by source and destination workload, namespace and
principal; services, ports, protocols, selectors and service accounts from the
Kubernetes API (kubeconfig or in-cluster). Istio's metrics carry no port: each
edge gets every port of its destination, and says so. Comments give each edge's
and service's requests and first and last seen. Edges under --min-requests, sources
without mTLS and flows onto no service are listed as comments, never dropped
silently. meshwaf's own Service becomes settings.meshwaf and its callers
inspect: true; calls from the ingress gateway make ingress: true. --merge keeps a
hand-edited graph as written and adds what is new; new and vanished edges are
listed on stderr. A Prometheus that times out, fails or answers partially
(warnings) is an error, as is one without any of the metrics.`,
		examples: `  meshwaf graph discover > graph.yaml   # with kubectl -n istio-system port-forward svc/prometheus 9090
  meshwaf graph discover --lookback 30d --min-requests 100 > graph.yaml
  meshwaf graph discover --merge graph.yaml > graph.new.yaml && diff graph.yaml graph.new.yaml`,
	},
	{
		name:  "manifests",
		usage: "manifests [--mode mesh|envoyfilter|pod|waypoint] [--part objects|istio-operator|pod-patch|profile-route] [flags]\n  meshwaf manifests --kustomize DIR [flags]",
		long: `Writes what installs meshwaf into Istio as multi-document YAML to stdout:
  --mode mesh         central service + CUSTOM AuthorizationPolicy (--part istio-operator: the
                      extension provider for istioctl install -f)
  --mode envoyfilter  central service + EnvoyFilter inserting ext_authz (workloads that already
                      use another CUSTOM provider)
  --mode pod          ServiceEntry + CUSTOM policy for a meshwaf container in each pod
                      (--part pod-patch: that container as a Deployment patch, and its ConfigMap)
  --mode waypoint     ambient: central service + one CUSTOM policy per namespace attached with
                      targetRefs to its waypoint (--waypoint-namespace) or to Services
                      (--waypoint-service NS/NAME); --part istio-operator as in mesh mode
--kustomize DIR writes the kustomize base and the four overlays (what manifests/ holds).
--image names the image you built and pushed (see the README's "Container image").`,
		examples: `  meshwaf manifests --image <your-registry>/meshwaf:<version> | kubectl apply -f -
  meshwaf manifests --mode mesh --part istio-operator > meshwaf-istio.yaml
  meshwaf manifests --mode envoyfilter --namespace waf --timeout 250ms
  meshwaf manifests --mode waypoint --waypoint-namespace shop --waypoint-service billing/ledger
  meshwaf manifests --kustomize my-manifests/ --image <your-registry>/meshwaf:<version>`,
	},
	{
		name:  "tune",
		usage: "tune [-f FILE|-] [--min-count N] [--profile NAME]",
		long: `Reads meshwaf's audit lines (serve's stdout; other lines are skipped), groups the
rules that matched by profile, rule, matched variable (ARGS:name, REQUEST_HEADERS:name,
REQUEST_COOKIES:name) and path, and writes the narrowest exclusion of each group as
YAML for defaultProfile.exclusions or profiles[].exclusions: one rule off one variable
under one pathPrefix, for the methods seen, with its count and an example request
(target values masked as in the audit log; header values are never logged). Run a
profile in detect mode on real traffic first, confirm a proposal with meshwaf
inspect, then merge it into the config. Rules with no variable to name (score checks,
meshwaf's limits) are counted, not proposed.`,
		examples: `  kubectl -n meshwaf-system logs deploy/meshwaf | meshwaf tune
  meshwaf tune -f audit.log --min-count 5 --profile api`,
	},
	{
		name:  "doctor",
		usage: "doctor [flags]",
		long: `Checks a live cluster, read-only (get and list), the way istioctl analyze does:
Istio's mesh config and meshwaf's extension provider in it (service, port,
timeout, failOpen, body settings against meshwaf's ConfigMap), meshwaf's
Deployment and its gRPC health, which workloads are under inspection and by which
mode (mesh, pod, envoyfilter), opted-in workloads under none, workloads held by
another CUSTOM provider, EnvoyFilters on waypoints, and meshwaf's policies still
in dry-run. Each finding has a stable code (MW0001 ...), a severity (error,
warning, info), the object it concerns and a fix; the README lists the codes.
The cluster is the kubeconfig's (--kubeconfig, $KUBECONFIG, ~/.kube/config) or,
inside a pod, the in-cluster config. The health probe dials the Service; from
outside the cluster that is an info finding (use --health-address with kubectl
port-forward). Exits with exit code 3 when a finding is at least --fail-on
(default error: inspection is blocked or not set up), 1 when the cluster cannot
be read, 2 on bad flags.`,
		examples: `  meshwaf doctor
  meshwaf doctor --context prod -o json
  kubectl -n meshwaf-system port-forward svc/meshwaf 9000 & meshwaf doctor --health-address 127.0.0.1:9000
  meshwaf doctor --namespace waf --fail-on warning`,
	},
	{
		name:     "version",
		usage:    "version",
		long:     `Prints the versions of meshwaf, Coraza, the embedded CRS and Go.`,
		examples: `  meshwaf version`,
	},
}

// commandGroups are commands made of subcommands.
var commandGroups = map[string]string{
	"config": "Config files: validate checks them as serve would load them.",
	"policy": "Policies from a ServiceGraph: generate writes them, verify checks them against the graph; diff, apply and promote work on a live cluster.",
	"graph":  "ServiceGraphs from a live mesh: discover writes one from Istio's metrics and the Kubernetes API.",
}

func lookupDoc(name string) (commandDoc, bool) {
	for _, d := range commandDocs {
		if d.name == name {
			return d, true
		}
	}
	return commandDoc{}, false
}

// helpCommand is `meshwaf help [COMMAND [SUBCOMMAND]]`.
func helpCommand(args []string, stdout io.Writer) error {
	name := strings.Join(args, " ")
	if name == "" {
		_, err := io.WriteString(stdout, usage)
		return err
	}
	if _, ok := lookupDoc(name); ok {
		// The command writes its own page, with the flags it defines.
		err := runHelp(args, stdout)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if summary, ok := commandGroups[name]; ok {
		return writeGroupHelp(stdout, name, summary)
	}
	return usageError{fmt.Errorf("unknown command %q; see 'meshwaf help'", name)}
}

// runHelp runs a command with --help: it prints its page and returns
// flag.ErrHelp.
func runHelp(cmd []string, stdout io.Writer) error {
	args := append(append([]string{}, cmd[1:]...), "--help")
	switch cmd[0] {
	case "serve":
		return serveCommand(context.Background(), args, stdout, io.Discard)
	case "inspect":
		_, err := inspectCommand(context.Background(), args, strings.NewReader(""), stdout, io.Discard)
		return err
	case "config":
		return configCommand(context.Background(), args, stdout, io.Discard)
	case "policy":
		return policyCommand(context.Background(), args, strings.NewReader(""), stdout, io.Discard)
	case "manifests":
		return manifestsCommand(context.Background(), args, stdout, io.Discard)
	case "graph":
		return graphCommand(context.Background(), args, stdout, io.Discard)
	case "tune":
		return tuneCommand(context.Background(), args, strings.NewReader(""), stdout)
	case "doctor":
		_, err := doctorCommand(context.Background(), args, stdout, io.Discard)
		return err
	case "version":
		return versionCommand(args, stdout)
	}
	return usageError{fmt.Errorf("unknown command %q", cmd[0])}
}

func writeGroupHelp(w io.Writer, group, summary string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nCommands:\n", summary)
	for _, d := range commandDocs {
		if strings.HasPrefix(d.name, group+" ") {
			fmt.Fprintf(&b, "  meshwaf %s\n", d.usage)
		}
	}
	fmt.Fprintf(&b, "\nRun 'meshwaf help %s <command>' for a command's description, examples and flags.\n", group)
	_, err := io.WriteString(w, b.String())
	return err
}

// newFlagSet is the FlagSet of the command name (as typed: "policy
// verify"). Parse errors are returned, not printed; parseArgs turns them
// into usage errors and writes the help page for -h and --help.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args into fs. -h or --help writes the command's help page
// to stdout and returns flag.ErrHelp (exit 0); a bad flag is a usageError
// (exit 2) that points at the help page.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		if werr := writeHelp(stdout, fs); werr != nil {
			return werr
		}
		return err
	}
	if err != nil {
		return usageError{fmt.Errorf("%w (see 'meshwaf help %s')", err, fs.Name())}
	}
	return nil
}

// writeHelp writes the help page of fs's command.
func writeHelp(w io.Writer, fs *flag.FlagSet) error {
	d, _ := lookupDoc(fs.Name())
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage:\n  meshwaf %s\n\nExamples:\n%s\n", d.long, d.usage, d.examples)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		typ, text := flag.UnquoteUsage(f)
		b.WriteString("  -")
		if len(f.Name) > 1 {
			b.WriteString("-") // --flag; one-letter flags stay -H, -f, -o
		}
		b.WriteString(f.Name)
		if typ != "" {
			b.WriteString(" " + typ)
		}
		b.WriteString("\n      " + strings.ReplaceAll(text, "\n", "\n      "))
		if def := f.DefValue; def != "" && def != "0" && def != "false" && !strings.Contains(text, "default") {
			if typ == "string" {
				def = fmt.Sprintf("%q", def)
			}
			b.WriteString(" (default " + def + ")")
		}
		b.WriteString("\n")
	})
	_, err := io.WriteString(w, b.String())
	return err
}
