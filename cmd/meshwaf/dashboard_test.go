package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

// servedFamilies registers everything serve exports on a registry, as run
// does, answers one denied check so the labelled series exist, and
// gathers them.
func servedFamilies(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	reg := newRegistry()
	rs, err := inspector.Compile(inspector.Profile{})
	require.NoError(t, err)
	srv, err := extauthz.NewServer(extauthz.Options{Engine: rs, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	require.NoError(t, err)
	_, err = newReloader(defaultConfig(), nil, configSource{}, srv.Update, reg, slog.New(slog.DiscardHandler), time.Now)
	require.NoError(t, err)
	// One denied check, so that the labelled series exist.
	_, err = srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "auth:8080", Protocol: "HTTP/1.1",
			Path: "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--",
		}},
	}})
	require.NoError(t, err)
	families, err := reg.Gather()
	require.NoError(t, err)
	return families
}

// exportedSeries returns every series name serve exports, with the
// _bucket/_sum/_count names of histograms.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, mf := range servedFamilies(t) {
		names[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+s] = true
			}
		}
	}
	return names
}

type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboard keeps the Grafana dashboard in step with the metrics: every
// query names only series that serve exports, and the views the rollout
// needs are there.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "manifests", "dashboard", "meshwaf.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(data, &d))
	require.Equal(t, "meshwaf-overview", d.UID)

	exported := exportedSeries(t)
	reMetric := regexp.MustCompile(`\bmeshwaf_[a-z_]+\b`)
	used := map[string]bool{}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "duplicate panel id %d", p.ID)
		ids[p.ID] = true
		titles[p.Title] = true
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			require.Equal(t, strings.Count(tg.Expr, "("), strings.Count(tg.Expr, ")"), "unbalanced: %s", tg.Expr)
			names := reMetric.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "%s: query names no meshwaf metric: %s", p.Title, tg.Expr)
			for _, n := range names {
				require.True(t, exported[n], "%s: %s is not exported by meshwaf", p.Title, n)
				used[n] = true
			}
		}
	}
	for _, want := range []string{"meshwaf_checks_total", "meshwaf_check_duration_seconds_bucket", "meshwaf_rule_matches_total",
		"meshwaf_config_reloads_total", "meshwaf_config_last_reload_success_timestamp_seconds", "meshwaf_checks_rejected_total",
		"meshwaf_preselect_rules_removed_total", "meshwaf_preselect_rules_evaluated_bucket", "meshwaf_preselect_disagreements_total"} {
		require.True(t, used[want], "the dashboard does not use %s", want)
	}
	for _, want := range []string{"Checks by decision", "Checks by profile", "Check latency", "Top rule ids", "Would-block rate in detect profiles", "Config reloads", "Checks refused by admission control", "Rule pre-selection"} {
		require.True(t, titles[want], "missing panel %q", want)
	}
}
