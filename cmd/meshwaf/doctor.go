//go:build !nodoctor

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshwaf/meshwaf/cluster"
	"github.com/meshwaf/meshwaf/install"
)

// doctorCommand is `meshwaf doctor`. It reports whether a finding at or
// above --fail-on was found.
func doctorCommand(ctx context.Context, args []string, stdout, _ io.Writer) (bool, error) {
	o := install.DefaultOptions()
	t := cluster.NewTarget(o)
	fs := newFlagSet("doctor")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster config)")
	kubeContext := fs.String("context", "", "kubeconfig context (default: the current context)")
	fs.StringVar(&t.Namespace, "namespace", t.Namespace, "namespace of meshwaf's Deployment, Service and ConfigMap")
	fs.StringVar(&t.ServiceName, "service-name", t.ServiceName, "name of meshwaf's Service, Deployment and ConfigMap")
	fs.StringVar(&t.ProviderName, "provider-name", t.ProviderName, "MeshConfig extension provider name (the pod mode's adds -local)")
	fs.StringVar(&t.IstioNamespace, "istio-namespace", t.IstioNamespace, "namespace of istiod and its mesh config")
	fs.StringVar(&t.MeshConfigMap, "mesh-config-map", t.MeshConfigMap, "ConfigMap with Istio's mesh config (istio-REVISION for a revision)")
	fs.StringVar(&t.ClusterDomain, "cluster-domain", t.ClusterDomain, "Kubernetes cluster DNS domain")
	grpcPort := fs.Int("grpc-port", int(t.GRPCPort), "meshwaf's ext_authz gRPC port")
	optIn := fs.String("opt-in-label", t.OptInLabel+"="+t.OptInValue, "label KEY=VALUE that opts a workload in")
	output := fs.String("o", "text", "output format: text or json")
	failOn := fs.String("fail-on", string(cluster.SeverityError), "exit with code 3 when a finding is at least this severe: error or warning")
	skipHealth := fs.Bool("skip-health", false, "do not probe meshwaf's gRPC health")
	healthAddress := fs.String("health-address", "", "probe gRPC health at HOST:PORT (e.g. 127.0.0.1:9000 through kubectl port-forward) instead of the Service")
	healthTimeout := fs.Duration("health-timeout", 2*time.Second, "bound on the gRPC health probe")
	requestTimeout := fs.Duration("request-timeout", 30*time.Second, "bound on each API server request")
	if err := parseArgs(fs, args, stdout); err != nil {
		return false, err
	}
	if fs.NArg() > 0 {
		return false, usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	if *output != "text" && *output != "json" {
		return false, usageError{fmt.Errorf("-o %q: want text or json", *output)}
	}
	min := cluster.Severity(*failOn)
	if min != cluster.SeverityError && min != cluster.SeverityWarning {
		return false, usageError{fmt.Errorf("--fail-on %q: want error or warning", *failOn)}
	}
	key, value, ok := strings.Cut(*optIn, "=")
	if !ok || key == "" {
		return false, usageError{fmt.Errorf("--opt-in-label %q: want KEY=VALUE", *optIn)}
	}
	t.OptInLabel, t.OptInValue = key, value
	if *grpcPort < 1 || *grpcPort > 65535 {
		return false, usageError{fmt.Errorf("--grpc-port %d: not between 1 and 65535", *grpcPort)}
	}
	t.GRPCPort = int32(*grpcPort)
	t.ParseConfig = parseMeshwafConfig

	cfg, err := cluster.RESTConfig(*kubeconfig, *kubeContext)
	if err != nil {
		return false, err
	}
	cfg.Timeout = *requestTimeout
	cfg.UserAgent = "meshwaf-doctor"
	r, err := cluster.NewReaderForConfig(cfg, *healthTimeout)
	if err != nil {
		return false, err
	}
	return runDoctor(ctx, r, t, cluster.ReadOptions{SkipHealth: *skipHealth, HealthAddress: *healthAddress}, *output, min, stdout)
}

// runDoctor reads the cluster, writes the findings and reports whether one
// is at least min.
func runDoctor(ctx context.Context, r *cluster.Reader, t cluster.Target, ro cluster.ReadOptions, output string, min cluster.Severity, w io.Writer) (bool, error) {
	s, err := r.Read(ctx, t, ro)
	if err != nil {
		return false, err
	}
	fs := cluster.Diagnose(s, t)
	if output == "json" {
		err = cluster.WriteJSON(w, fs)
	} else {
		err = cluster.WriteText(w, fs)
	}
	return cluster.Worst(fs, min), err
}

// parseMeshwafConfig reads meshwaf's config file from its ConfigMap as
// serve would load it (strictly, with the same validation) and returns
// the default profile's body settings and the queue wait.
func parseMeshwafConfig(data []byte) (cluster.MeshwafConfig, error) {
	cfg, err := configFrom(&commonFlags{config: install.ConfigKey}, nil, data)
	if err != nil {
		return cluster.MeshwafConfig{}, err
	}
	p := cfg.DefaultProfile.WithDefaults()
	return cluster.MeshwafConfig{
		RequestBodyLimit: p.RequestBodyLimit,
		AllowPartialBody: p.AllowPartialBody,
		QueueWait:        time.Duration(cfg.QueueWait),
	}, nil
}
