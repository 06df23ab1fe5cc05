//go:build !nodoctor

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	securityclient "istio.io/client-go/pkg/clientset/versioned/typed/security/v1"

	"github.com/meshwaf/meshwaf/cluster"
	"github.com/meshwaf/meshwaf/meshpolicy"
	"github.com/meshwaf/meshwaf/rollout"
)

// exitDrift: `policy diff` found drift, `policy promote` refused (the
// nodoctor build has neither).
const exitDrift = 3

// clusterFlags are the connection flags of the commands that talk to a
// cluster.
type clusterFlags struct {
	kubeconfig, context string
	requestTimeout      time.Duration
}

func (c *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster config)")
	fs.StringVar(&c.context, "context", "", "kubeconfig context (default: the current context)")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 30*time.Second, "bound on each API server request")
}

// client is the security.istio.io/v1 client the flags point at.
func (c *clusterFlags) client(agent string) (rollout.Client, error) {
	cfg, err := cluster.RESTConfig(c.kubeconfig, c.context)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = c.requestTimeout
	cfg.UserAgent = agent
	return securityclient.NewForConfig(cfg)
}

// rolloutGraph loads the graph of -f and checks that its name can label
// the objects meshwaf owns.
func rolloutGraph(path string, stdin io.Reader) (*meshpolicy.Graph, error) {
	if path == "" {
		return nil, usageError{errors.New("-f graph.yaml is required")}
	}
	g, err := loadGraph(path, stdin)
	if err != nil {
		return nil, err
	}
	if err := rollout.CheckGraphName(g.Name); err != nil {
		return nil, usageError{err}
	}
	// The sidecar plan ignores waypoints: applying it to an ambient graph
	// would enforce other policies than generate --dataplane ambient.
	for _, s := range g.Services {
		if s.Waypoint != "" {
			return nil, usageError{fmt.Errorf("service %s names waypoint %s: diff, apply and promote handle the sidecar data plane only; "+
				"for ambient use policy generate --dataplane ambient", s.Ref(), s.Waypoint)}
		}
	}
	return g, nil
}

func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	return nil
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return usageError{fmt.Errorf("-o %q: want text or json", o)}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func policyDiff(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("policy diff")
	var cf clusterFlags
	cf.register(fs)
	graph := fs.String("f", "", "ServiceGraph file ('-' for stdin)")
	root := fs.String("root-namespace", "istio-system", "Istio's root namespace: its policies apply to every namespace")
	asEnforced := fs.Bool("as-enforced", false, "evaluate the graph's dry-run policies as if promoted (what promote would enforce)")
	output := fs.String("o", "text", "output format: text or json")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if err := errors.Join(noArgs(fs), checkOutput(*output)); err != nil {
		return err
	}
	g, err := rolloutGraph(*graph, stdin)
	if err != nil {
		return err
	}
	c, err := cf.client("meshwaf-policy-diff")
	if err != nil {
		return err
	}
	live, err := rollout.ListAll(ctx, c)
	if err != nil {
		return err
	}
	r := rollout.Diff(meshpolicy.NewPlan(g), live, rollout.DiffOptions{RootNamespace: *root, AsEnforced: *asEnforced})
	if *output == "json" {
		err = writeJSON(stdout, r)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if r.Drift() {
		return statusError{code: exitDrift, err: fmt.Errorf("drift: the cluster differs from graph %s", g.Name)}
	}
	return nil
}

func policyApply(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("policy apply")
	var cf clusterFlags
	cf.register(fs)
	graph := fs.String("f", "", "ServiceGraph file ('-' for stdin)")
	stage := fs.String("stage", string(rollout.StageDryRun), "dry-run (istio.io/dry-run: \"true\", enforcing nothing; then promote) or enforce")
	dryRun := fs.String("dry-run", "none", "none, or server: the API server validates and admits every request and stores nothing")
	prune := fs.Bool("prune", true, "delete the graph's objects (by label) that are no longer generated, after applying")
	output := fs.String("o", "text", "output format: text or json")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if err := errors.Join(noArgs(fs), checkOutput(*output)); err != nil {
		return err
	}
	st, err := rollout.ParseStage(*stage)
	if err != nil {
		return usageError{err}
	}
	if *dryRun != "none" && *dryRun != "server" {
		return usageError{fmt.Errorf("--dry-run %q: want none or server", *dryRun)}
	}
	g, err := rolloutGraph(*graph, stdin)
	if err != nil {
		return err
	}
	c, err := cf.client("meshwaf-policy-apply")
	if err != nil {
		return err
	}
	changes, err := rollout.Apply(ctx, c, meshpolicy.NewPlan(g), rollout.ApplyOptions{Stage: st, ServerDryRun: *dryRun == "server", Prune: *prune})
	if *output == "json" {
		if changes == nil {
			changes = []rollout.Change{}
		}
		if werr := writeJSON(stdout, changes); werr != nil {
			return errors.Join(err, werr)
		}
		return err
	}
	var b strings.Builder
	suffix := ""
	if *dryRun == "server" {
		suffix = " (server dry run)"
	}
	for _, ch := range changes {
		b.WriteString(ch.String() + suffix + "\n")
	}
	if _, werr := io.WriteString(stdout, b.String()); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

func policyPromote(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("policy promote")
	var cf clusterFlags
	cf.register(fs)
	graph := fs.String("f", "", "ServiceGraph file ('-' for stdin)")
	prom := fs.String("prometheus", "", "Prometheus base URL (e.g. http://127.0.0.1:9090 through kubectl port-forward)")
	stableFor := fs.Duration("stable-for", 10*time.Minute, "how long the policies must have been in dry-run with zero shadow denials")
	queryTimeout := fs.Duration("query-timeout", 30*time.Second, "bound on each Prometheus query")
	labels := rollout.DefaultMetricLabels()
	fs.StringVar(&labels.Namespace, "namespace-label", labels.Namespace, "label of the sidecars' series that holds the pod's namespace")
	fs.StringVar(&labels.Pod, "pod-label", labels.Pod, "label of the sidecars' series that holds the pod's name")
	dryRun := fs.String("dry-run", "none", "none, or server: the API server validates the promotion and stores nothing")
	output := fs.String("o", "text", "output format: text or json")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if err := errors.Join(noArgs(fs), checkOutput(*output)); err != nil {
		return err
	}
	if *prom == "" {
		return usageError{errors.New("--prometheus URL is required")}
	}
	if *stableFor <= 0 {
		return usageError{fmt.Errorf("--stable-for %s: want a positive duration", *stableFor)}
	}
	if *dryRun != "none" && *dryRun != "server" {
		return usageError{fmt.Errorf("--dry-run %q: want none or server", *dryRun)}
	}
	g, err := rolloutGraph(*graph, stdin)
	if err != nil {
		return err
	}
	c, err := cf.client("meshwaf-policy-promote")
	if err != nil {
		return err
	}
	q, err := rollout.NewPrometheus(*prom, *queryTimeout)
	if err != nil {
		return usageError{err}
	}
	res, err := rollout.Promote(ctx, c, q, meshpolicy.NewPlan(g), rollout.PromoteOptions{
		StableFor: *stableFor, ServerDryRun: *dryRun == "server", Labels: labels,
	})
	if res != nil {
		var werr error
		if *output == "json" {
			werr = writeJSON(stdout, res)
		} else {
			werr = res.WriteText(stdout)
		}
		if err == nil && werr != nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	if res.Refused != "" {
		return statusError{code: exitDrift, err: errors.New("not promoted: " + res.Refused)}
	}
	return nil
}
