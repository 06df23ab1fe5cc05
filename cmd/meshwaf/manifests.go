package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/meshwaf/meshwaf/install"
)

// manifestsCommand is `meshwaf manifests`.
func manifestsCommand(_ context.Context, args []string, stdout, _ io.Writer) error {
	o := install.DefaultOptions()
	fs := newFlagSet("manifests")
	mode := fs.String("mode", string(install.ModeMesh), "install mode: mesh, envoyfilter, pod or waypoint (ambient)")
	part := fs.String("part", string(install.PartObjects), "what to write: objects, istio-operator, pod-patch or profile-route")
	kustomize := fs.String("kustomize", "", "write the kustomize tree (base/, overlays/) into this directory instead")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of meshwaf's Deployment and Service")
	fs.StringVar(&o.RootNamespace, "root-namespace", o.RootNamespace, "Istio's root namespace (mesh-wide CUSTOM policy, EnvoyFilter, ServiceEntry)")
	fs.StringVar(&o.ServiceName, "service-name", o.ServiceName, "name of meshwaf's Service, Deployment and ServiceAccount")
	fs.StringVar(&o.ProviderName, "provider-name", o.ProviderName, "MeshConfig extension provider name (pod mode adds -local)")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "Kubernetes cluster DNS domain")
	fs.StringVar(&o.Image, "image", o.Image, "meshwaf container image")
	replicas := fs.Int("replicas", int(o.Replicas), "replicas, and the autoscaler's minimum (at least 2)")
	maxReplicas := fs.Int("max-replicas", int(o.MaxReplicas), "the autoscaler's maximum")
	grpcPort := fs.Int("grpc-port", int(o.GRPCPort), "ext_authz gRPC port")
	metricsPort := fs.Int("metrics-port", int(o.MetricsPort), "admin port: /metrics, /healthz, /readyz")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "bound on one check as Envoy sees it (Istio's own default is 600s)")
	fs.BoolVar(&o.FailOpen, "fail-open", o.FailOpen, "let requests pass when meshwaf cannot answer (default: fail closed)")
	fs.IntVar(&o.StatusOnError, "status-on-error", o.StatusOnError, "HTTP status Envoy answers when meshwaf cannot")
	maxBody := fs.Uint("max-request-bytes", uint(o.MaxRequestBytes), "request body Envoy sends with each check (at most --request-body-limit)")
	fs.BoolVar(&o.AllowPartialMessage, "allow-partial-message", o.AllowPartialMessage, "send the first max-request-bytes of longer bodies instead of Envoy answering 413")
	fs.BoolVar(&o.PackAsBytes, "pack-as-bytes", o.PackAsBytes, "send the body as raw bytes (raw_body)")
	fs.IntVar(&o.RequestBodyLimit, "request-body-limit", o.RequestBodyLimit, "meshwaf's defaultProfile.requestBodyLimit in the rendered config")
	optIn := fs.String("opt-in-label", o.OptInLabel+"="+o.OptInValue, "label KEY=VALUE that opts a workload in")
	exclude := &listFlag{vals: o.ExcludePaths}
	fs.Var(exclude, "exclude-path", "`PATH` the CUSTOM policy never sends to meshwaf (repeatable; empty clears; default "+strings.Join(o.ExcludePaths, ", ")+")")
	scrapers := &listFlag{vals: o.ScraperNamespaces}
	callers := &listFlag{vals: o.CallerNamespaces}
	fs.Var(callers, "caller-namespace", "only sidecars in this `NAMESPACE` may call meshwaf's gRPC port (repeatable; default: any mesh identity over mTLS)")
	fs.Var(scrapers, "scraper-namespace", "`NAMESPACE` allowed to scrape the metrics port over mTLS (repeatable; empty clears; default "+strings.Join(o.ScraperNamespaces, ", ")+")")
	fs.StringVar(&o.LocalHost, "local-host", o.LocalHost, "ServiceEntry host of the pod mode")
	fs.StringVar(&o.WaypointName, "waypoint-name", o.WaypointName, "waypoint mode: the waypoint Gateway of each --waypoint-namespace")
	wpNamespaces := &listFlag{vals: o.WaypointNamespaces}
	fs.Var(wpNamespaces, "waypoint-namespace", "waypoint mode: inspect every request of this `NAMESPACE`'s waypoint (repeatable; empty clears; default "+
		strings.Join(o.WaypointNamespaces, ", ")+" unless --waypoint-service is given)")
	wpServices := &listFlag{}
	fs.Var(wpServices, "waypoint-service", "waypoint mode: inspect this Service at its waypoint, as `NAMESPACE/NAME` (repeatable)")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	key, value, ok := strings.Cut(*optIn, "=")
	if !ok {
		return usageError{fmt.Errorf("--opt-in-label %q: want KEY=VALUE", *optIn)}
	}
	o.OptInLabel, o.OptInValue = key, value
	o.ExcludePaths, o.ScraperNamespaces, o.CallerNamespaces = exclude.nonEmpty(), scrapers.nonEmpty(), callers.nonEmpty()
	var errs []error
	o.WaypointNamespaces = wpNamespaces.nonEmpty()
	if wpServices.set && !wpNamespaces.set {
		o.WaypointNamespaces = nil // only the Services named
	}
	o.WaypointServices = nil
	for _, v := range wpServices.nonEmpty() {
		ns, name, ok := strings.Cut(v, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("--waypoint-service %q: want NAMESPACE/NAME", v))
			continue
		}
		o.WaypointServices = append(o.WaypointServices, install.ServiceRef{Namespace: ns, Name: name})
	}
	for _, n := range []struct {
		flag string
		v    int
		max  int
		dst  *int32
	}{
		{"replicas", *replicas, 1000, &o.Replicas}, {"max-replicas", *maxReplicas, 1000, &o.MaxReplicas},
		{"grpc-port", *grpcPort, 65535, &o.GRPCPort}, {"metrics-port", *metricsPort, 65535, &o.MetricsPort},
	} {
		if n.v < 0 || n.v > n.max {
			errs = append(errs, fmt.Errorf("--%s %d: not between 0 and %d", n.flag, n.v, n.max))
			continue
		}
		*n.dst = int32(n.v)
	}
	if *maxBody > 1<<32-1 {
		errs = append(errs, fmt.Errorf("--max-request-bytes %d: too large", *maxBody))
	} else {
		o.MaxRequestBytes = uint32(*maxBody)
	}
	if !slices.Contains(install.Modes(), install.Mode(*mode)) {
		errs = append(errs, fmt.Errorf("--mode %q: want mesh, envoyfilter, pod or waypoint", *mode))
	}
	if !slices.Contains(install.Parts(), install.Part(*part)) {
		errs = append(errs, fmt.Errorf("--part %q: want objects, istio-operator, pod-patch or profile-route", *part))
	}
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	if *kustomize != "" {
		return optionsUsage(writeTree(*kustomize, o))
	}
	out, err := install.Render(o, install.Mode(*mode), install.Part(*part))
	if err != nil {
		return optionsUsage(err)
	}
	_, err = stdout.Write(out)
	return err
}

// optionsUsage makes options the install library refuses a usage error.
func optionsUsage(err error) error {
	if oe := (*install.OptionsError)(nil); errors.As(err, &oe) {
		return usageError{err}
	}
	return err
}

// writeTree writes the kustomize tree under dir, in a stable order.
func writeTree(dir string, o install.Options) error {
	files, err := install.KustomizeTree(o)
	if err != nil {
		return err
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil { //nolint:gosec // a source tree others read
			return err
		}
		if err := os.WriteFile(dst, files[p], 0o644); err != nil { //nolint:gosec // manifests are meant to be read
			return err
		}
	}
	return nil
}
