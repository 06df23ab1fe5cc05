package istio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
)

// EgressObjects are the Sidecars and NetworkPolicies read for the egress
// check, each with where it came from ("file:line").
type EgressObjects struct {
	Sidecars        []Origin[*networkingv1.Sidecar]
	NetworkPolicies []Origin[*k8snetworkingv1.NetworkPolicy]
}

// Origin is an object and the "file:line" of its document.
type Origin[T any] struct {
	Origin string
	Object T
}

// LoadEgressObjects reads the Sidecars (networking.istio.io, any version)
// and NetworkPolicies (networking.k8s.io/v1) from the files and
// directories LoadPolicies takes; other kinds are skipped silently (the
// AuthorizationPolicy loader notes them). A Sidecar's spec is decoded
// strictly, as istiod would.
func LoadEgressObjects(paths ...string) (*EgressObjects, error) {
	out := &EgressObjects{}
	return out, eachFile(paths, out.add)
}

func (o *EgressObjects) add(file string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var errs []error
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: invalid YAML: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(n.Content) > 0 {
			errs = append(errs, o.decode(file, n.Content[0]))
		}
	}
	return errors.Join(errs...)
}

func (o *EgressObjects) decode(file string, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return nil // LoadPolicies reports it
	}
	origin := fmt.Sprintf("%s:%d", file, n.Line)
	var h docHeader
	if err := n.Decode(&h); err != nil {
		return nil //nolint:nilerr // LoadPolicies reports it
	}
	if strings.HasSuffix(h.Kind, "List") && h.Items != nil {
		var errs []error
		for i := range h.Items {
			errs = append(errs, o.decode(file, &h.Items[i]))
		}
		return errors.Join(errs...)
	}
	group, _, _ := strings.Cut(h.APIVersion, "/")
	isSidecar := h.Kind == "Sidecar" && group == "networking.istio.io"
	isNP := h.Kind == "NetworkPolicy" && h.APIVersion == "networking.k8s.io/v1"
	if !isSidecar && !isNP {
		return nil
	}
	id := h.Kind + " " + h.Metadata.Namespace + "/" + h.Metadata.Name
	var raw map[string]any
	if err := n.Decode(&raw); err != nil {
		return fmt.Errorf("%s: %s: %s", origin, id, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	delete(raw, "status")
	if isNP {
		js, err := json.Marshal(raw)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", origin, id, err)
		}
		np := &k8snetworkingv1.NetworkPolicy{}
		jd := json.NewDecoder(bytes.NewReader(js))
		jd.DisallowUnknownFields()
		if err := jd.Decode(np); err != nil {
			return fmt.Errorf("%s: %s: %w", origin, id, err)
		}
		o.NetworkPolicies = append(o.NetworkPolicies, Origin[*k8snetworkingv1.NetworkPolicy]{origin, np})
		return nil
	}
	spec := raw["spec"]
	delete(raw, "spec")
	js, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", origin, id, err)
	}
	sc := &networkingv1.Sidecar{}
	if err := json.Unmarshal(js, sc); err != nil {
		return fmt.Errorf("%s: %s: %w", origin, id, err)
	}
	if spec != nil {
		sj, err := json.Marshal(spec)
		if err != nil {
			return fmt.Errorf("%s: %s: spec: %w", origin, id, err)
		}
		if err := protojson.Unmarshal(sj, &sc.Spec); err != nil {
			return fmt.Errorf("%s: %s: spec: %s", origin, id, strings.ReplaceAll(err.Error(), "\u00a0", " "))
		}
	}
	o.Sidecars = append(o.Sidecars, Origin[*networkingv1.Sidecar]{origin, sc})
	return nil
}
