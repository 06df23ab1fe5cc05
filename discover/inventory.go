package discover

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Inventory is what the Kubernetes API says about services and workloads.
type Inventory struct {
	Services  []KService
	Workloads []Workload
	// ServiceAccounts are "namespace/name".
	ServiceAccounts map[string]bool
}

// KService is a Kubernetes Service.
type KService struct {
	Namespace, Name string
	// Selector is spec.selector; empty for a Service without one.
	Selector map[string]string
	Ports    []KPort
}

// KPort is one Service port with the protocol Istio would read for it.
type KPort struct {
	Port int
	Name string
	// Protocol is HTTP, HTTP2, GRPC, TCP or TLS: appProtocol, else the
	// port name's prefix (Istio's protocol selection), else TCP.
	Protocol string
	// From says where Protocol came from.
	From string
	// UDP ports are never in the graph (Istio does not proxy UDP).
	UDP bool
}

// Workload is a Deployment, StatefulSet or DaemonSet: Istio's
// source_workload and destination_workload name these.
type Workload struct {
	Kind, Namespace, Name string
	// Labels are the pod template's labels.
	Labels         map[string]string
	ServiceAccount string
}

// Ref is "namespace/name".
func (w Workload) Ref() string { return w.Namespace + "/" + w.Name }

// Ref is "namespace/name".
func (s KService) Ref() string { return s.Namespace + "/" + s.Name }

// Selects reports whether the Service's selector matches w's pod labels.
func (s KService) Selects(w Workload) bool {
	if len(s.Selector) == 0 || s.Namespace != w.Namespace {
		return false
	}
	for k, v := range s.Selector {
		if w.Labels[k] != v {
			return false
		}
	}
	return true
}

// ReadInventory lists Services, ServiceAccounts, Deployments, StatefulSets
// and DaemonSets of every namespace (get and list only).
func ReadInventory(ctx context.Context, core coreclient.CoreV1Interface, apps appsclient.AppsV1Interface) (*Inventory, error) {
	inv := &Inventory{ServiceAccounts: map[string]bool{}}
	// Lists are read in pages, so a large cluster is never held whole.
	page := func(what string, list func(metav1.ListOptions) (string, error)) error {
		opts := metav1.ListOptions{Limit: 500}
		for {
			next, err := list(opts)
			if err != nil {
				return fmt.Errorf("list %s: %w", what, err)
			}
			if next == "" {
				return nil
			}
			opts.Continue = next
		}
	}
	add := func(kind string, m metav1.ObjectMeta, t corev1.PodTemplateSpec) {
		inv.Workloads = append(inv.Workloads, Workload{Kind: kind, Namespace: m.Namespace, Name: m.Name,
			Labels: t.Labels, ServiceAccount: saOf(t.Spec)})
	}
	err := page("Services", func(o metav1.ListOptions) (string, error) {
		l, err := core.Services("").List(ctx, o)
		if err != nil {
			return "", err
		}
		for _, s := range l.Items {
			ks := KService{Namespace: s.Namespace, Name: s.Name, Selector: s.Spec.Selector}
			for _, p := range s.Spec.Ports {
				ks.Ports = append(ks.Ports, portOf(p))
			}
			inv.Services = append(inv.Services, ks)
		}
		return l.Continue, nil
	})
	if err == nil {
		err = page("ServiceAccounts", func(o metav1.ListOptions) (string, error) {
			l, err := core.ServiceAccounts("").List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, sa := range l.Items {
				inv.ServiceAccounts[sa.Namespace+"/"+sa.Name] = true
			}
			return l.Continue, nil
		})
	}
	if err == nil {
		err = page("Deployments", func(o metav1.ListOptions) (string, error) {
			l, err := apps.Deployments("").List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, d := range l.Items {
				add("Deployment", d.ObjectMeta, d.Spec.Template)
			}
			return l.Continue, nil
		})
	}
	if err == nil {
		err = page("StatefulSets", func(o metav1.ListOptions) (string, error) {
			l, err := apps.StatefulSets("").List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, s := range l.Items {
				add("StatefulSet", s.ObjectMeta, s.Spec.Template)
			}
			return l.Continue, nil
		})
	}
	if err == nil {
		err = page("DaemonSets", func(o metav1.ListOptions) (string, error) {
			l, err := apps.DaemonSets("").List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, d := range l.Items {
				add("DaemonSet", d.ObjectMeta, d.Spec.Template)
			}
			return l.Continue, nil
		})
	}
	if err != nil {
		return nil, err
	}
	inv.sort()
	return inv, nil
}

func (inv *Inventory) sort() {
	sort.Slice(inv.Services, func(i, j int) bool { return inv.Services[i].Ref() < inv.Services[j].Ref() })
	sort.Slice(inv.Workloads, func(i, j int) bool { return inv.Workloads[i].Ref() < inv.Workloads[j].Ref() })
}

func saOf(spec corev1.PodSpec) string {
	if spec.ServiceAccountName != "" {
		return spec.ServiceAccountName
	}
	return "default"
}

// portOf reads a port's protocol as Istio's protocol selection does:
// appProtocol first, then the name's prefix before '-'.
func portOf(p corev1.ServicePort) KPort {
	kp := KPort{Port: int(p.Port), Name: p.Name, UDP: p.Protocol == corev1.ProtocolUDP, Protocol: "TCP", From: "default"}
	if p.AppProtocol != nil {
		if proto, ok := protocolOf(*p.AppProtocol); ok {
			kp.Protocol, kp.From = proto, "appProtocol "+*p.AppProtocol
			return kp
		}
	}
	prefix, _, _ := strings.Cut(p.Name, "-")
	if proto, ok := protocolOf(prefix); ok {
		kp.Protocol, kp.From = proto, "port name "+p.Name
	}
	return kp
}

func protocolOf(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "http", "http-web", "kubernetes.io/ws", "kubernetes.io/wss":
		return "HTTP", true
	case "http2", "kubernetes.io/h2c":
		return "HTTP2", true
	case "grpc", "grpc-web":
		return "GRPC", true
	case "https", "tls":
		return "TLS", true
	case "tcp", "mongo", "mysql", "redis":
		return "TCP", true
	}
	return "", false
}
