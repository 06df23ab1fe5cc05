package meshpolicy

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// egressOf flattens a plan's egress to "source -> dest:port,port [why]".
func egressOf(p *Plan) []string {
	var out []string
	for _, e := range p.Egress() {
		if len(e.Calls) == 0 {
			out = append(out, e.Source.ID+" -> nothing")
		}
		for _, c := range e.Calls {
			s := e.Source.ID + " -> " + c.Dest.ID + ":"
			for i, dp := range c.Ports {
				if i > 0 {
					s += ","
				}
				s += fmt.Sprint(dp.Port)
			}
			out = append(out, s+" "+fmt.Sprint(c.Why))
		}
	}
	return out
}

func TestPlanEgress(t *testing.T) {
	tests := []struct {
		graph string
		want  []string
	}{
		{filepath.Join("..", "examples", "shop-graph.yaml"), []string{
			"default/auth -> meshwaf-system/meshwaf:9000 [ext_authz]",
			"default/db -> meshwaf-system/meshwaf:9000 [ext_authz]",
			"default/www -> default/auth:8080 [edge]",
			"default/www -> default/db:8080 [edge]",
			"default/www -> meshwaf-system/meshwaf:9000 [ext_authz]",
		}},
		// Ingress and scraper grants are not any service's egress; a narrowed
		// edge and a plain one to the same service make one call with both
		// ports; batch and api-sa both reach db on their own.
		{filepath.Join("testdata", "valid-full.yaml"), []string{
			"back/api -> back/db:5432 [edge]",
			"back/api -> waf/meshwaf:9001 [ext_authz]",
			"back/batch -> back/db:5432 [edge]",
			"back/db -> nothing",
			"front/web -> back/api:5000,8443 [edge]",
			"front/web -> waf/meshwaf:9001 [ext_authz]",
		}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.graph), func(t *testing.T) {
			require.Equal(t, tt.want, egressOf(NewPlan(mustLoad(t, tt.graph))))
		})
	}
}
