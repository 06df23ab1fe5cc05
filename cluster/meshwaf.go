package cluster

import "fmt"

// readMeshwafConfig reads meshwaf's config file from its ConfigMap, or
// returns MW0012 (only when the central service is expected).
func readMeshwafConfig(s *Snapshot, t Target, central bool) (*MeshwafConfig, []Finding) {
	obj := Object{Kind: "ConfigMap", Namespace: t.Namespace, Name: t.ServiceName}
	var problem string
	switch {
	case s.MeshwafConfig == nil:
		problem = "does not exist"
	case t.ParseConfig == nil:
		return nil, nil
	default:
		data, ok := s.MeshwafConfig.Data[t.ConfigKey]
		if !ok {
			problem = fmt.Sprintf("has no key %q", t.ConfigKey)
			break
		}
		cfg, err := t.ParseConfig([]byte(data))
		if err != nil {
			problem = fmt.Sprintf("holds a config meshwaf rejects: %v", err)
			break
		}
		return &cfg, nil
	}
	if !central {
		return nil, nil
	}
	return nil, []Finding{newFinding(CodeMeshwafConfigUnreadable, obj,
		"check it with meshwaf config validate, or reapply meshwaf manifests",
		"%s %s: the provider's body settings cannot be compared with meshwaf's limits", obj, problem)}
}

// checkDeployment checks that meshwaf's Deployment has its replicas
// available: none available blocks inspection (checks fail, and get the
// failure policy).
func checkDeployment(s *Snapshot, t Target) []Finding {
	obj := Object{Kind: "Deployment", Namespace: t.Namespace, Name: t.ServiceName}
	d := s.Deployment
	if d == nil {
		return []Finding{newFinding(CodeDeploymentMissing, obj,
			"install meshwaf: meshwaf manifests --mode mesh | kubectl apply -f - (or pass --namespace/--service-name)",
			"meshwaf's Deployment does not exist: every check fails and gets the provider's failure policy")}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	got := d.Status.AvailableReplicas
	switch {
	case want > 0 && got == 0:
		return []Finding{newFinding(CodeDeploymentUnavailable, obj,
			fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", t.Namespace, t.ServiceName, t.Namespace, t.ServiceName),
			"no replica available (desired %d): every check fails and gets the provider's failure policy", want)}
	case want == 0:
		return []Finding{newFinding(CodeDeploymentUnavailable, obj,
			fmt.Sprintf("kubectl -n %s scale deployment %s --replicas 2", t.Namespace, t.ServiceName),
			"scaled to zero replicas: every check fails and gets the provider's failure policy")}
	case got < want:
		return []Finding{newFinding(CodeDeploymentDegraded, obj,
			fmt.Sprintf("kubectl -n %s describe deployment %s", t.Namespace, t.ServiceName),
			"%d of %d replicas available", got, want)}
	}
	return nil
}

// checkHealth reports the gRPC health probe's outcome.
func checkHealth(s *Snapshot, t Target) []Finding {
	obj := Object{Kind: "Service", Namespace: t.Namespace, Name: t.ServiceName}
	h := s.Health
	portForward := fmt.Sprintf("kubectl -n %s port-forward svc/%s %d, then meshwaf doctor --health-address 127.0.0.1:%d",
		t.Namespace, t.ServiceName, t.GRPCPort, t.GRPCPort)
	switch {
	case !h.Probed:
		return []Finding{newFinding(CodeHealthSkipped, obj, "", "gRPC health not probed (--skip-health)")}
	case !h.Reachable:
		return []Finding{newFinding(CodeHealthUnreachable, obj, "to probe from outside the cluster: "+portForward,
			"gRPC health at %s not reachable from here: %s", h.Address, h.Err)}
	case h.Status != "SERVING":
		return []Finding{newFinding(CodeHealthNotServing, obj,
			fmt.Sprintf("kubectl -n %s logs deployment/%s (NOT_SERVING while starting or draining)", t.Namespace, t.ServiceName),
			"gRPC health at %s answers %s", h.Address, h.Status)}
	}
	return []Finding{newFinding(CodeHealthServing, obj, "", "gRPC health at %s answers SERVING", h.Address)}
}
