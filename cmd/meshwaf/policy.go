package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// policyCommand is `meshwaf policy generate|verify|diff|apply|promote`.
func policyCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_ = writeGroupHelp(stderr, "policy", commandGroups["policy"])
		return usageError{errors.New("want a subcommand: " + policySubcommands)}
	}
	switch args[0] {
	case "generate":
		return policyGenerate(args[1:], stdin, stdout, stderr)
	case "verify":
		return policyVerify(args[1:], stdin, stdout, stderr)
	case "diff":
		return policyDiff(ctx, args[1:], stdin, stdout)
	case "apply":
		return policyApply(ctx, args[1:], stdin, stdout)
	case "promote":
		return policyPromote(ctx, args[1:], stdin, stdout)
	case "-h", "--help", "-help", "help":
		return writeGroupHelp(stdout, "policy", commandGroups["policy"])
	}
	return usageError{fmt.Errorf("unknown subcommand %q: want %s", args[0], policySubcommands)}
}

const policySubcommands = "generate, verify, diff, apply or promote"

// loadGraph reads a graph file ('-' for stdin); errors are usage errors.
func loadGraph(path string, stdin io.Reader) (*meshpolicy.Graph, error) {
	var (
		g   *meshpolicy.Graph
		err error
	)
	if path == "-" {
		data, rerr := io.ReadAll(stdin)
		if rerr != nil {
			return nil, rerr
		}
		g, err = meshpolicy.Decode("<stdin>", data)
	} else {
		g, err = meshpolicy.Load(path)
	}
	if err != nil {
		return nil, usageError{err}
	}
	return g, nil
}

func policyGenerate(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy generate")
	graph := fs.String("f", "", "ServiceGraph file ('-' for stdin)")
	format := fs.String("format", istio.FormatIstio, "output: istio (AuthorizationPolicies) or networkpolicy (Kubernetes NetworkPolicies)")
	dryRun := fs.Bool("dry-run", false, `annotate the AuthorizationPolicies with istio.io/dry-run: "true" (istio format only)`)
	dataplane := fs.String("dataplane", istio.DataplaneSidecar, "sidecar, or ambient (ztunnel L4 policies; waypoint policies with targetRefs for services with a waypoint)")
	egress := fs.Bool("egress", false, "add the callers' side: a Sidecar per service importing exactly its destinations (istio), or egress rules with DNS and istiod (networkpolicy)")
	domain := fs.String("cluster-domain", istio.DefaultClusterDomain, "Kubernetes cluster DNS domain of the Sidecars' hosts")
	var hosts listFlag
	fs.Var(&hosts, "egress-host", "extra Sidecar egress `HOST` (namespace/fqdn) every service imports, e.g. a tracing collector (repeatable)")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if err := checkDataplane(*dataplane); err != nil {
		return err
	}
	if *dataplane == istio.DataplaneAmbient && *format != istio.FormatIstio {
		return usageError{errors.New("--format networkpolicy with --dataplane ambient: ambient traffic reaches pods over HBONE (port 15008), so the plan's ports cannot be NetworkPolicy ports; use --format istio")}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	if *graph == "" {
		return usageError{errors.New("-f graph.yaml is required")}
	}
	if *format != istio.FormatIstio && *format != istio.FormatNetworkPolicy {
		return usageError{fmt.Errorf("--format %q: want istio or networkpolicy", *format)}
	}
	if *dryRun && *format == istio.FormatNetworkPolicy {
		return usageError{errors.New("--dry-run: NetworkPolicies have no dry-run mode; use --format istio")}
	}
	if *dryRun && *egress && *format == istio.FormatIstio {
		return usageError{errors.New("--dry-run: Sidecars have no dry-run mode; generate --egress without it")}
	}
	if len(hosts.vals) > 0 && (!*egress || *format != istio.FormatIstio) {
		return usageError{errors.New("--egress-host: only with --egress in the istio format")}
	}
	if *egress && *dataplane == istio.DataplaneAmbient {
		return usageError{errors.New("--egress with --dataplane ambient: ambient workloads have no sidecar for a Sidecar resource to scope")}
	}
	g, err := loadGraph(*graph, stdin)
	if err != nil {
		return err
	}
	opts := istio.RenderOptions{Format: *format, DryRun: *dryRun, Egress: *egress, ClusterDomain: *domain, EgressHosts: hosts.vals}
	var out []byte
	if *dataplane == istio.DataplaneAmbient {
		plan, perr := meshpolicy.NewAmbientPlan(g)
		if perr != nil {
			return usageError{fmt.Errorf("%s: %w", *graph, perr)}
		}
		out, err = istio.GenerateAmbient(plan, opts)
	} else {
		out, err = istio.Generate(meshpolicy.NewPlan(g), opts)
	}
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// matrixLimit is how many sources the matrix shows with --matrix=auto.
const matrixLimit = 60

func policyVerify(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy verify")
	graph := fs.String("graph", "", "ServiceGraph file ('-' for stdin)")
	var files listFlag
	fs.Var(&files, "f", "AuthorizationPolicy YAML `FILE` or directory (repeatable)")
	root := fs.String("root-namespace", "istio-system", "Istio's root namespace: its policies apply to every namespace")
	strict := fs.Bool("strict", false, "count conditional flows (decided by attributes verify cannot evaluate) as mismatches")
	egress := fs.Bool("egress", false, "require Sidecars or egress NetworkPolicies among the files and check them (they are checked whenever present)")
	domain := fs.String("cluster-domain", istio.DefaultClusterDomain, "Kubernetes cluster DNS domain of the Sidecars' hosts")
	var hosts listFlag
	fs.Var(&hosts, "egress-host", "extra Sidecar egress `HOST` every service is expected to import, as given to generate (repeatable)")
	matrix := fs.String("matrix", "auto", fmt.Sprintf("print the reachability matrix: auto (up to %d sources), always or never", matrixLimit))
	dataplane := fs.String("dataplane", istio.DataplaneSidecar, "sidecar, or ambient (ztunnel selector policies and waypoint targetRefs policies)")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if err := checkDataplane(*dataplane); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	if *graph == "" {
		return usageError{errors.New("--graph graph.yaml is required")}
	}
	if len(files.vals) == 0 {
		return usageError{errors.New("-f policies.yaml is required (repeatable; files or directories)")}
	}
	if *matrix != "auto" && *matrix != "always" && *matrix != "never" {
		return usageError{fmt.Errorf("--matrix %q: want auto, always or never", *matrix)}
	}
	g, err := loadGraph(*graph, stdin)
	if err != nil {
		return err
	}
	set, err := istio.LoadPolicies(files.vals...)
	if err != nil {
		return usageError{err}
	}
	if *egress && *dataplane == istio.DataplaneAmbient {
		return usageError{errors.New("--egress with --dataplane ambient: ambient workloads have no sidecar for a Sidecar resource to scope")}
	}
	eobjs, err := istio.LoadEgressObjects(files.vals...)
	if err != nil {
		return usageError{err}
	}
	plan := meshpolicy.NewPlan(g)
	evaluate := istio.Evaluate
	if *dataplane == istio.DataplaneAmbient {
		if plan, err = meshpolicy.NewAmbientPlan(g); err != nil {
			return usageError{fmt.Errorf("%s: %w", *graph, err)}
		}
		evaluate = istio.EvaluateAmbient
	}
	got, notes := evaluate(plan, set.Policies, istio.EvalOptions{RootNamespace: *root})
	want := plan.Expected()
	diff := plan.Compare(want, got)

	var b strings.Builder
	fmt.Fprintf(&b, "graph %s: %d services, %d edges; %d AuthorizationPolicies read\n", g.Name, len(g.Services), len(g.Edges), len(set.Policies))
	all := append(append([]string(nil), set.Notes...), notes...)
	for _, n := range all {
		b.WriteString("note: " + n + "\n")
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	switch {
	case *matrix == "always" || (*matrix == "auto" && len(plan.Sources) <= matrixLimit):
		err = plan.WriteMatrix(stdout, want, got)
	case *matrix == "auto":
		_, err = fmt.Fprintf(stdout, "reachability matrix omitted: %d sources (use --matrix always)\n", len(plan.Sources))
	}
	if err != nil {
		return err
	}
	if err := diff.WriteDiff(stdout, *strict); err != nil {
		return err
	}
	// Egress is each workload's own calls: the graph's edges, whatever the
	// dataplane does with the grants.
	egressOK, err := verifyEgress(stdout, meshpolicy.NewPlan(g), eobjs, *egress, istio.EgressCheckOptions{
		ClusterDomain: *domain, EgressHosts: hosts.vals, RootNamespace: *root})
	if err != nil {
		return err
	}
	if diff.Mismatch(*strict) {
		return fmt.Errorf("the policies do not allow exactly the flows of graph %s", g.Name)
	}
	if !egressOK {
		return fmt.Errorf("the egress objects do not allow exactly the calls of graph %s", g.Name)
	}
	return nil
}

// checkDataplane accepts the --dataplane values.
func checkDataplane(v string) error {
	if v != istio.DataplaneSidecar && v != istio.DataplaneAmbient {
		return usageError{fmt.Errorf("--dataplane %q: want %s or %s", v, istio.DataplaneSidecar, istio.DataplaneAmbient)}
	}
	return nil
}
