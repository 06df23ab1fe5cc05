//go:build !nodoctor

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/meshwaf/meshwaf/cluster"
	"github.com/meshwaf/meshwaf/discover"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// graphCommand is `meshwaf graph discover`.
func graphCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_ = writeGroupHelp(stderr, "graph", commandGroups["graph"])
		return usageError{errors.New("want a subcommand: discover")}
	}
	switch args[0] {
	case "discover":
		return graphDiscover(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "-help", "help":
		return writeGroupHelp(stdout, "graph", commandGroups["graph"])
	}
	return usageError{fmt.Errorf("unknown subcommand %q: want discover", args[0])}
}

func graphDiscover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("graph discover")
	promURL := fs.String("prometheus", "http://127.0.0.1:9090", "Prometheus `URL` (e.g. through kubectl -n istio-system port-forward svc/prometheus 9090)")
	lookback := fs.String("lookback", "7d", "how far back to read the metrics (Prometheus durations: 7d, 36h)")
	atFlag := fs.String("at", "", "end of the lookback, RFC 3339 (default: now)")
	stepFlag := fs.String("step", "", "resolution of first and last seen (default: the lookback / 168, at least 1m)")
	minRequests := fs.Int64("min-requests", 1, "an edge observed fewer times (requests plus TCP connections) is written as a comment, not an edge")
	timeout := fs.Duration("timeout", time.Minute, "bound on each Prometheus query (the client's and the server's)")
	merge := fs.String("merge", "", "hand-edited graph `FILE` to merge into: its services, edges and settings are kept; new and vanished edges are reported")
	name := fs.String("name", "discovered", "metadata.name of the graph (with --merge: the file's)")
	trustDomain := fs.String("trust-domain", meshpolicy.DefaultTrustDomain, "the mesh's trust domain (with --merge: the file's)")
	var exclude listFlag
	exclude.vals = []string{"kube-system", "kube-public", "kube-node-lease", "istio-system"}
	var namespaces listFlag
	fs.Var(&namespaces, "namespace", "only this `NAMESPACE`'s Services become graph services (repeatable; default: every namespace not excluded)")
	fs.Var(&exclude, "exclude-namespace", "`NAMESPACE` whose Services are not graph services (repeatable; given, it replaces kube-system, kube-public, kube-node-lease, istio-system)")
	meshwafNS := fs.String("meshwaf-namespace", meshpolicy.DefaultMeshwafNamespace, "namespace of meshwaf's own Service")
	meshwafSvc := fs.String("meshwaf-service", "meshwaf", "name of meshwaf's own Service: settings.meshwaf, and its callers are inspect: true")
	ingress := fs.String("ingress-principal", "", "the ingress gateway's principal (default: the --merge file's, else <trust-domain>/ns/istio-system/sa/istio-ingressgateway-service-account)")
	ingressLabel := fs.String("ingress-label", "istio=ingressgateway", "pod label `KEY=VALUE` of the ingress gateway's workloads")
	optIn := fs.String("opt-in-label", "meshwaf.io/inspect=enabled", "pod label `KEY=VALUE` that opts a workload in to inspection")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster config)")
	kubeContext := fs.String("context", "", "kubeconfig context (default: the current context)")
	requestTimeout := fs.Duration("request-timeout", 30*time.Second, "bound on each API server request")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	lb, err := model.ParseDuration(*lookback)
	if err != nil || lb <= 0 {
		return usageError{fmt.Errorf("--lookback %q: want a positive duration such as 7d or 36h", *lookback)}
	}
	at := time.Now().UTC().Truncate(time.Minute)
	if *atFlag != "" {
		if at, err = time.Parse(time.RFC3339, *atFlag); err != nil {
			return usageError{fmt.Errorf("--at %q: want RFC 3339 (2026-11-20T12:00:00Z)", *atFlag)}
		}
	}
	step := discover.DefaultStep(time.Duration(lb))
	if *stepFlag != "" {
		s, err := model.ParseDuration(*stepFlag)
		if err != nil || s <= 0 || time.Duration(s) > time.Duration(lb) {
			return usageError{fmt.Errorf("--step %q: want a positive duration no longer than --lookback", *stepFlag)}
		}
		step = time.Duration(s)
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: want a positive duration", *timeout)}
	}
	o := discover.Options{Name: *name, TrustDomain: *trustDomain, MinRequests: *minRequests, Lookback: time.Duration(lb), At: at, Step: step,
		ExcludeNamespaces: exclude.nonEmpty(), Namespaces: namespaces.nonEmpty(), MeshwafNamespace: *meshwafNS, MeshwafService: *meshwafSvc, IngressPrincipal: *ingress}
	for _, l := range []struct {
		flag, val string
		dst       *[2]string
	}{{"--ingress-label", *ingressLabel, &o.IngressLabel}, {"--opt-in-label", *optIn, &o.OptInLabel}} {
		k, v, ok := strings.Cut(l.val, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("%s %q: want KEY=VALUE", l.flag, l.val)}
		}
		*l.dst = [2]string{k, v}
	}
	var base *meshpolicy.Graph
	if *merge != "" {
		if base, err = meshpolicy.Load(*merge); err != nil {
			return usageError{err}
		}
		o.TrustDomain = base.TrustDomain
		if o.IngressPrincipal == "" {
			o.IngressPrincipal = base.Settings.IngressGateway.PrincipalIn(base.TrustDomain)
		}
	}
	if o.IngressPrincipal == "" {
		o.IngressPrincipal = meshpolicy.Principal(o.TrustDomain, meshpolicy.DefaultIngressNamespace, meshpolicy.DefaultIngressSA)
	}

	if u, err := url.Parse(*promURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--prometheus %q: want an http or https URL", *promURL)}
	}
	cfg, err := cluster.RESTConfig(*kubeconfig, *kubeContext)
	if err != nil {
		return err
	}
	cfg.Timeout = *requestTimeout
	cfg.UserAgent = "meshwaf-graph-discover"
	// Lists of thousands of objects decode several times faster as protobuf.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// Prometheus and the API server are read at the same time; a failed
	// Prometheus stops the API server's reading.
	var (
		flows   []discover.Flow
		flowErr error
		done    = make(chan struct{})
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(done)
		flows, flowErr = discover.ReadFlows(ctx, &http.Client{}, discover.Query{At: at, Lookback: time.Duration(lb), Step: step, Timeout: *timeout, Address: *promURL})
		if flowErr != nil {
			cancel()
		}
	}()
	inv, invErr := readInventory(ctx, cfg)
	<-done
	if flowErr != nil {
		return flowErr
	}
	if invErr != nil {
		return invErr
	}
	r := discover.Build(inv, flows, o).Graph(base, *merge)
	if err := discover.Write(stdout, r); err != nil {
		return err
	}
	return discover.WriteSummary(stderr, r)
}

// readInventory reads the Services and workloads through cfg.
func readInventory(ctx context.Context, cfg *rest.Config) (*discover.Inventory, error) {
	core, err := coreclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	apps, err := appsclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return discover.ReadInventory(ctx, core, apps)
}
