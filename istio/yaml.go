package istio

import (
	"bytes"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// MarshalDocuments renders objects as multi-document YAML in the order
// given, with keys sorted, and without the empty status and
// creationTimestamp fields that client types carry. The same input always
// gives the same bytes.
func MarshalDocuments(objs ...any) ([]byte, error) {
	return marshalDocuments(objs, prune)
}

// marshalDocuments writes each object, as a JSON map trimmed by clean, as
// one YAML document.
func marshalDocuments(objs []any, clean func(map[string]any)) ([]byte, error) {
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
