package istio

// MarshalInstall renders install objects like MarshalDocuments, after
// dropping what none of them needs and client types add anyway: status,
// null fields and empty objects.
func MarshalInstall(objs ...any) ([]byte, error) {
	return marshalDocuments(objs, func(m map[string]any) {
		delete(m, "status")
		pruneEmpty(m)
		prune(m)
	})
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
