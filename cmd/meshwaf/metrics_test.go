package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
)

// TestProcessMetrics: serve's registry exports the @rx DFAs' memory and
// resets (process-wide, not per server), the check served counts DFA
// states, and the families pass promlint.
func TestProcessMetrics(t *testing.T) {
	families := servedFamilies(t)
	names := map[string]bool{}
	for _, mf := range families {
		names[mf.GetName()] = true
		// The check served ran @rx DFAs: their states are counted.
		if mf.GetName() == "meshwaf_rx_dfa_bytes" {
			require.Positive(t, mf.GetMetric()[0].GetGauge().GetValue(), "meshwaf_rx_dfa_bytes")
		}
	}
	for _, want := range []string{"meshwaf_rx_dfa_bytes", "meshwaf_rx_dfa_resets_total"} {
		require.True(t, names[want], "missing %s", want)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
}
