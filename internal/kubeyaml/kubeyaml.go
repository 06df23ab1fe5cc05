// Package kubeyaml writes the Kubernetes objects meshwaf generates
// (policies and install objects alike) as deterministic multi-document
// YAML, and names the label every such object carries.
package kubeyaml

import (
	"bytes"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// The label that marks every object meshwaf generates.
const (
	// ManagedByLabel marks every object meshwaf generates.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of ManagedByLabel.
	ManagedBy = "meshwaf"
)

// Marshal renders objects as multi-document YAML in the order given, with
// keys sorted, and without the empty status and creationTimestamp fields
// that client types carry. The same input always gives the same bytes.
func Marshal(objs ...any) ([]byte, error) {
	return marshal(objs, prune)
}

// MarshalCompact renders objects like Marshal, after dropping what client
// types add and no generated object needs: status, null fields and empty
// objects. Empty lists and zero scalars stay.
func MarshalCompact(objs ...any) ([]byte, error) {
	return marshal(objs, func(m map[string]any) {
		delete(m, "status")
		pruneEmpty(m)
		prune(m)
	})
}

// marshal writes each object, as a JSON map trimmed by clean, as one YAML
// document.
func marshal(objs []any, clean func(map[string]any)) ([]byte, error) {
	var out bytes.Buffer
	for i, o := range objs {
		raw, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		clean(m)
		doc, err := yaml.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(doc)
	}
	return out.Bytes(), nil
}

// prune drops the fields the API server fills in.
func prune(m map[string]any) {
	if st, ok := m["status"].(map[string]any); ok && len(st) == 0 {
		delete(m, "status")
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		if md["creationTimestamp"] == nil {
			delete(md, "creationTimestamp")
		}
	}
	if tpl, ok := m["spec"].(map[string]any); ok {
		if t, ok := tpl["template"].(map[string]any); ok {
			if md, ok := t["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
				delete(md, "creationTimestamp")
			}
		}
	}
}

// pruneEmpty returns v without null values and empty objects, nil when
// nothing is left of an object. Empty lists and zero scalars stay.
func pruneEmpty(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if p := pruneEmpty(x); p == nil {
				delete(t, k)
			} else {
				t[k] = p
			}
		}
		if len(t) == 0 {
			return nil
		}
		return t
	case []any:
		for i, x := range t {
			if p := pruneEmpty(x); p != nil {
				t[i] = p
			} else {
				t[i] = map[string]any{}
			}
		}
		return t
	default:
		return v
	}
}
