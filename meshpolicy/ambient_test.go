package meshpolicy

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

const ambientGraphYAML = `apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: amb}
spec:
  settings: {scraper: {namespace: monitoring, serviceAccount: prometheus}}
  services:
  - {name: www, ports: [{port: 8080, protocol: HTTP}, {port: 9102, protocol: HTTP, metrics: true}], ingress: true, inspect: true, waypoint: wp}
  - {name: api, ports: [{port: 8080, protocol: HTTP}], inspect: true, waypoint: wp}
  - {name: db, ports: [{port: 5432}], inspect: true}
  edges:
  - {from: www, to: api, methods: [GET]}
  - {from: api, to: db}
`

func TestAmbientPlan(t *testing.T) {
	g, err := Decode("amb.yaml", []byte(ambientGraphYAML))
	require.NoError(t, err)
	require.Equal(t, "wp", g.Services[0].Waypoint)
	p, err := NewAmbientPlan(g)
	require.NoError(t, err)

	wp := p.Sources[len(p.Sources)-1]
	require.Equal(t, Peer{ID: "waypoint:default/wp", Kind: KindWaypoint, Namespace: "default", Name: "wp", ServiceAccount: "wp",
		Principal: "cluster.local/ns/default/sa/wp", Labels: map[string]string{WaypointGatewayLabel: "wp"}}, wp)
	require.Equal(t, []Peer{wp}, p.Waypoints())

	dest := func(id string) (int, Destination) {
		for i, d := range p.Destinations {
			if d.ID == id {
				return i, d
			}
		}
		t.Fatalf("no destination %s", id)
		return 0, Destination{}
	}
	ai, api := dest("default/api")
	require.Equal(t, wp.ID, api.Waypoint)
	require.Equal(t, []Grant{
		{Principal: "cluster.local/ns/default/sa/wp", Sources: []string{wp.ID}, Why: WhyWaypoint},
		{Principal: "cluster.local/ns/default/sa/www", Sources: []string{"default/www"}, Methods: []string{"GET"}, Why: WhyEdge, Via: wp.ID},
	}, api.Ports[0].Grants)
	_, www := dest("default/www")
	for _, gr := range www.Ports[0].Grants {
		require.Empty(t, gr.Via, "the ingress gateway reaches the pod directly: %+v", gr)
	}
	di, db := dest("default/db")
	require.Empty(t, db.Waypoint)
	require.Empty(t, db.Ports[0].Grants[0].Via)
	_, mw := dest("meshwaf-system/meshwaf")
	var grpc []string
	for _, dp := range mw.Ports {
		if dp.Port == DefaultGRPCPort {
			for _, gr := range dp.Grants {
				grpc = append(grpc, gr.Principal)
			}
		}
	}
	require.Equal(t, []string{"cluster.local/ns/default/sa/wp"}, grpc, "the waypoint, not the workloads, calls meshwaf")
	require.Contains(t, mw.Reason, "waypoint:default/wp for default/api, default/www")
	require.Contains(t, p.Notes, "warning: default/db is inspected but has no waypoint: in ambient mode only a waypoint calls meshwaf, so nothing inspects its requests")

	src := func(id string) int {
		for i, s := range p.Sources {
			if s.ID == id {
				return i
			}
		}
		t.Fatalf("no source %s", id)
		return 0
	}
	wi := src(wp.ID)
	tests := []struct {
		from string
		dest int
		via  int
	}{
		{"default/www", ai, wi},
		{IngressGatewayID, ai, -1},
		{ScraperID, ai, -1},
		{wp.ID, ai, -1},
		{"default/api", di, -1},
	}
	for _, tt := range tests {
		require.Equal(t, tt.via, p.Via(src(tt.from), tt.dest), "%s -> %d", tt.from, tt.dest)
	}
	want := p.Expected()
	k := p.DestPortIndex(ai, 0)
	require.True(t, want.Allowed[k].Has(wi), "the waypoint reaches api")
	require.True(t, want.Partial[k].Has(src("default/www")), "www reaches api for GET only")
}

func TestAmbientPlanErrors(t *testing.T) {
	tests := []struct {
		name, edit string
		path       fielderr.Path
		msg        string
	}{
		{"narrowed edge to a service without waypoint", "  - {from: www, to: db2, paths: [/x]}\n",
			fielderr.At("spec", "edges").Index(2).Field("paths"), "default/db2 has no waypoint: ztunnel enforces L4 only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := ambientGraphYAML[:len(ambientGraphYAML)-len("  edges:\n  - {from: www, to: api, methods: [GET]}\n  - {from: api, to: db}\n")] +
				"  - {name: db2, ports: [{port: 80, protocol: HTTP}]}\n  edges:\n  - {from: www, to: api, methods: [GET]}\n  - {from: api, to: db}\n" + tt.edit
			g, err := Decode("amb.yaml", []byte(y))
			require.NoError(t, err)
			_, err = NewAmbientPlan(g)
			var list ErrorList
			require.True(t, errors.As(err, &list), "%v", err)
			require.Len(t, list, 1)
			require.Equal(t, tt.path, list[0].Path)
			require.Contains(t, list[0].Err.Error(), tt.msg)
		})
	}
	_, err := Decode("amb.yaml", []byte(ambientGraphYAML[:len(ambientGraphYAML)-len("  edges:\n  - {from: www, to: api, methods: [GET]}\n  - {from: api, to: db}\n")]+
		"  - {name: x, ports: [{port: 80}], waypoint: Bad_Name}\n"))
	var list ErrorList
	require.True(t, errors.As(err, &list), "%v", err)
	require.Equal(t, fielderr.At("spec", "services").Index(3).Field("waypoint"), list[0].Path)
	require.Contains(t, list[0].Err.Error(), `invalid waypoint name "Bad_Name"`)
}
