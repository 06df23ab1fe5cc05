package install

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAllowPolicyCallers(t *testing.T) {
	o := DefaultOptions()
	def := o.allowPolicy()
	require.Equal(t, []string{"*"}, def.Spec.Rules[0].From[0].Source.Principals, "default: any mesh identity")
	require.Empty(t, def.Spec.Rules[0].From[0].Source.Namespaces)

	o.CallerNamespaces = []string{"default", "payments"}
	require.NoError(t, o.validate())
	p := o.allowPolicy()
	src := p.Spec.Rules[0].From[0].Source
	require.Equal(t, []string{"default", "payments"}, src.Namespaces)
	require.Empty(t, src.Principals, "no wildcard beside the namespaces: ALLOW rules add up")
	require.Equal(t, []string{"9000"}, p.Spec.Rules[0].To[0].Operation.Ports)
	require.Equal(t, []string{"monitoring"}, p.Spec.Rules[1].From[0].Source.Namespaces, "the scraper rule stays")

	o.CallerNamespaces = []string{"Not_A_Namespace"}
	require.ErrorContains(t, o.validate(), `caller namespace "Not_A_Namespace"`)
}
