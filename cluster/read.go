package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	networkingclient "istio.io/client-go/pkg/clientset/versioned/typed/networking/v1alpha3"
	securityclient "istio.io/client-go/pkg/clientset/versioned/typed/security/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig is the client config kubectl would use: the kubeconfig file
// (else $KUBECONFIG, else ~/.kube/config) and its context (empty for the
// current one), or the in-cluster config when there is no kubeconfig.
func RESTConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// Reader reads the Snapshot doctor checks, with get and list only. It
// uses the typed clients of the four API groups it reads, not whole
// clientsets, which would link every API group into the binary.
type Reader struct {
	Clients
	probe func(ctx context.Context, address string) Health
}

// Clients are the API clients a Reader reads through.
type Clients struct {
	Core       coreclient.CoreV1Interface
	Apps       appsclient.AppsV1Interface
	Security   securityclient.SecurityV1Interface
	Networking networkingclient.NetworkingV1alpha3Interface
}

// NewReader reads through c; probe answers the gRPC health probe
// (ProbeHealth, or a stand-in in tests).
func NewReader(c Clients, probe func(ctx context.Context, address string) Health) *Reader {
	return &Reader{Clients: c, probe: probe}
}

// NewReaderForConfig builds the clients for cfg; the probe is ProbeHealth
// with timeout.
func NewReaderForConfig(cfg *rest.Config, timeout time.Duration) (*Reader, error) {
	var c Clients
	var err error
	if c.Core, err = coreclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Apps, err = appsclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Security, err = securityclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Networking, err = networkingclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return NewReader(c, func(ctx context.Context, address string) Health {
		return ProbeHealth(ctx, address, timeout)
	}), nil
}

// ReadOptions choose the health probe.
type ReadOptions struct {
	// SkipHealth leaves the probe out (Health.Probed false).
	SkipHealth bool
	// HealthAddress is dialled instead of the Service's host and gRPC port
	// (e.g. 127.0.0.1:9000 through kubectl port-forward).
	HealthAddress string
}

// Read takes the snapshot. An object that does not exist is left nil; any
// other API error (forbidden, unreachable) is returned.
func (r *Reader) Read(ctx context.Context, t Target, o ReadOptions) (*Snapshot, error) {
	s := &Snapshot{}
	var err error
	get := func(what string, fetch func() error) {
		if err != nil {
			return
		}
		if e := fetch(); e != nil && !apierrors.IsNotFound(e) {
			err = fmt.Errorf("reading %s: %w", what, e)
		}
	}
	core, apps := r.Core, r.Apps
	get("the mesh config", func() (e error) {
		cm, e := core.ConfigMaps(t.IstioNamespace).Get(ctx, t.MeshConfigMap, metav1.GetOptions{})
		if e == nil {
			s.MeshConfig = cm
		}
		return e
	})
	get("istiod", func() error {
		l, e := apps.Deployments(t.IstioNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
		if e == nil {
			s.Istiod = l.Items
		}
		return e
	})
	get("meshwaf's Deployment", func() error {
		d, e := apps.Deployments(t.Namespace).Get(ctx, t.ServiceName, metav1.GetOptions{})
		if e == nil {
			s.Deployment = d
		}
		return e
	})
	get("meshwaf's Service", func() error {
		svc, e := core.Services(t.Namespace).Get(ctx, t.ServiceName, metav1.GetOptions{})
		if e == nil {
			s.Service = svc
		}
		return e
	})
	get("meshwaf's ConfigMap", func() error {
		cm, e := core.ConfigMaps(t.Namespace).Get(ctx, t.ServiceName, metav1.GetOptions{})
		if e == nil {
			s.MeshwafConfig = cm
		}
		return e
	})
	all := metav1.ListOptions{}
	get("Deployments", func() error {
		l, e := apps.Deployments("").List(ctx, all)
		if e != nil {
			return e
		}
		for _, d := range l.Items {
			s.Workloads = append(s.Workloads, Workload{Kind: "Deployment", Namespace: d.Namespace, Name: d.Name, Labels: d.Spec.Template.Labels})
		}
		return nil
	})
	get("StatefulSets", func() error {
		l, e := apps.StatefulSets("").List(ctx, all)
		if e != nil {
			return e
		}
		for _, d := range l.Items {
			s.Workloads = append(s.Workloads, Workload{Kind: "StatefulSet", Namespace: d.Namespace, Name: d.Name, Labels: d.Spec.Template.Labels})
		}
		return nil
	})
	get("DaemonSets", func() error {
		l, e := apps.DaemonSets("").List(ctx, all)
		if e != nil {
			return e
		}
		for _, d := range l.Items {
			s.Workloads = append(s.Workloads, Workload{Kind: "DaemonSet", Namespace: d.Namespace, Name: d.Name, Labels: d.Spec.Template.Labels})
		}
		return nil
	})
	get("Pods", func() error {
		l, e := core.Pods("").List(ctx, all)
		if e != nil {
			return e
		}
		for _, p := range l.Items {
			if metav1.GetControllerOf(&p) == nil { // a controller's pods are its workload's
				s.Workloads = append(s.Workloads, Workload{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, Labels: p.Labels})
			}
		}
		return nil
	})
	get("Services", func() error {
		l, e := core.Services("").List(ctx, all)
		if e != nil {
			return e
		}
		for _, svc := range l.Items {
			s.Services = append(s.Services, Labelled{Namespace: svc.Namespace, Name: svc.Name, Labels: svc.Labels})
		}
		return nil
	})
	get("Namespaces", func() error {
		l, e := core.Namespaces().List(ctx, all)
		if e != nil {
			return e
		}
		for _, ns := range l.Items {
			s.Namespaces = append(s.Namespaces, Labelled{Name: ns.Name, Labels: ns.Labels})
		}
		return nil
	})
	get("AuthorizationPolicies", func() error {
		l, e := r.Security.AuthorizationPolicies("").List(ctx, all)
		if e == nil {
			s.AuthorizationPolicies = l.Items
		}
		return e
	})
	get("EnvoyFilters", func() error {
		l, e := r.Networking.EnvoyFilters("").List(ctx, all)
		if e == nil {
			s.EnvoyFilters = l.Items
		}
		return e
	})
	if err != nil {
		return nil, err
	}
	switch {
	case o.SkipHealth:
	case o.HealthAddress != "":
		s.Health = r.probe(ctx, o.HealthAddress)
	default:
		s.Health = r.probe(ctx, net.JoinHostPort(t.ServiceHost(), strconv.Itoa(int(t.GRPCPort))))
	}
	return s, nil
}

// ProbeHealth asks address for the gRPC health of Envoy's Authorization
// service, within timeout. No answer (no DNS, no route, refused, timed
// out, or a connection the mesh's mTLS closes) is Reachable false; any
// answer is Reachable, with its status.
func ProbeHealth(ctx context.Context, address string, timeout time.Duration) Health {
	h := Health{Probed: true, Address: address}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.Err = err.Error()
		return h
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	switch code := status.Code(err); {
	case err == nil:
		h.Reachable, h.Status = true, resp.GetStatus().String()
	case code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Canceled || errors.Is(err, context.DeadlineExceeded):
		h.Err = err.Error()
	default:
		// Something answered, but not with a health status.
		h.Reachable, h.Status = true, "error: "+err.Error()
	}
	return h
}
