package cluster

// Diagnose runs every check over s and returns the findings, sorted
// (Sort). It reads nothing but s and t.
func Diagnose(s *Snapshot, t Target) []Finding {
	m, out := readMesh(s, t)
	filters := len(meshwafFilters(s, t)) > 0
	// The central service is expected unless meshwaf runs only in pods:
	// the mesh provider or meshwaf's EnvoyFilter exists, a CUSTOM policy
	// names the mesh provider, or there is no pod-mode provider either.
	central := m.has(t.ProviderName) || filters || len(customPoliciesNaming(s, t.ProviderName)) > 0 ||
		!m.has(t.LocalProviderName())
	cfg, cfgFindings := readMeshwafConfig(s, t, central)
	out = append(out, cfgFindings...)
	if m.mc != nil {
		out = append(out, checkProviders(s, t, m, central && !filters, cfg)...)
	}
	if central {
		out = append(out, checkDeployment(s, t)...)
		out = append(out, checkHealth(s, t)...)
	}
	out = append(out, checkWorkloads(s, t, m)...)
	out = append(out, checkWaypointFilters(s, m)...)
	out = append(out, checkDryRun(s)...)
	Sort(out)
	return out
}
