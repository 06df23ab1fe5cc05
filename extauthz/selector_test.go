package extauthz

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

var testMatches = []ProfileMatch{
	{Profile: "payments", Match: Match{Namespaces: []string{"payments"}}},
	{Profile: "payments-api", Match: Match{ServiceAccounts: []string{"payments/api"}}},
	// The shorter suffix comes first, so "first match wins" fails the
	// longest-suffix cases.
	{Profile: "internal", Match: Match{Namespaces: []string{"cms"}, Hosts: []string{"*.svc.cluster.local"}}},
	{Profile: "cms", Match: Match{Namespaces: []string{"cms"}, Hosts: []string{"cms.example.com", "*.cms.svc.cluster.local"}}},
	{Profile: "gateway", Match: Match{ServiceAccounts: []string{"istio-system/ingress"}, Hosts: []string{"*.example.com"}}},
	{Profile: "gateway-shop", Match: Match{ServiceAccounts: []string{"istio-system/ingress"}, Hosts: []string{"*.shop.example.com"}}},
	{Profile: "gateway-any", Match: Match{ServiceAccounts: []string{"istio-system/ingress"}}},
	{Profile: "watch"},
}

func testSelector(t *testing.T) *Selector {
	t.Helper()
	s, err := NewSelector("", []string{"default", "payments", "payments-api", "cms", "internal", "gateway", "gateway-shop", "gateway-any", "watch"}, testMatches)
	require.NoError(t, err)
	return s
}

// checkTo builds a CheckRequest from the http2 fixture with the given
// destination principal, host and profile context extension.
func checkTo(t *testing.T, principal, host, ctxProfile string) *authv3.CheckRequest {
	t.Helper()
	cr := loadCheckRequest(t, "http2.json")
	cr.Attributes.Destination.Principal = principal
	cr.Attributes.Request.Http.Host = host
	if ctxProfile != "" {
		cr.Attributes.ContextExtensions = map[string]string{ContextKeyProfile: ctxProfile}
	}
	return cr
}

// hintOf is the profile hint requestFrom reads from an HTTP CheckRequest.
func hintOf(t *testing.T, cr *authv3.CheckRequest) ProfileHint {
	t.Helper()
	_, h, ok := requestFrom(cr)
	require.True(t, ok)
	return h
}

func TestSelectProfile(t *testing.T) {
	tests := []struct {
		name, principal, host, ctx, want string
	}{
		{"context extension wins over everything", "spiffe://cluster.local/ns/payments/sa/api", "cms.example.com", "watch", "watch"},
		{"unknown context profile falls through", "spiffe://cluster.local/ns/payments/sa/web", "", "nosuch", "payments"},
		{"service account beats namespace", "spiffe://cluster.local/ns/payments/sa/api", "", "", "payments-api"},
		{"namespace", "spiffe://cluster.local/ns/payments/sa/web", "", "", "payments"},
		{"other trust domain, same identity", "spiffe://corp.example/ns/payments/sa/api", "", "", "payments-api"},
		{"principal beats host", "spiffe://cluster.local/ns/payments/sa/web", "cms.example.com", "", "payments"},
		{"exact host within the identity", "spiffe://cluster.local/ns/cms/sa/editor", "cms.example.com", "", "cms"},
		{"host with port, any case", "spiffe://cluster.local/ns/cms/sa/editor", "CMS.Example.com:8080", "", "cms"},
		{"longest suffix, listed last", "spiffe://cluster.local/ns/cms/sa/editor", "pages.cms.svc.cluster.local:80", "", "cms"},
		{"shorter suffix", "spiffe://cluster.local/ns/cms/sa/editor", "db.shop.svc.cluster.local", "", "internal"},
		{"identity's hosts unmatched, no profile for any host", "spiffe://cluster.local/ns/cms/sa/editor", "db:8080", "", ""},
		{"gateway: longest suffix", "spiffe://cluster.local/ns/istio-system/sa/ingress", "www.shop.example.com", "", "gateway-shop"},
		{"gateway: shorter suffix", "spiffe://cluster.local/ns/istio-system/sa/ingress", "blog.example.com", "", "gateway"},
		{"gateway: identity without hosts", "spiffe://cluster.local/ns/istio-system/sa/ingress", "other.test", "", "gateway-any"},
		{"forged host: another identity's hosts do not apply", "spiffe://cluster.local/ns/shop/sa/orders", "cms.example.com", "", ""},
		{"forged host: no principal", "", "cms.example.com", "", ""},
		{"forged host: namespace match keeps its profile", "spiffe://cluster.local/ns/payments/sa/web", "www.shop.example.com", "", "payments"},
		{"no principal, unmatched host", "", "db:8080", "", ""},
		{"malformed principal ignored", "spiffe://cluster.local/ns/payments", "", "", ""},
		{"fallback", "spiffe://cluster.local/ns/shop/sa/www", "", "", ""},
	}
	s := testSelector(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, s.Select(hintOf(t, checkTo(t, tt.principal, tt.host, tt.ctx))))
		})
	}
	require.Empty(t, (*Selector)(nil).Select(hintOf(t, checkTo(t, "", "", "watch"))), "no selector: default")
}

func TestSelectorErrors(t *testing.T) {
	known := []string{"default", "a", "b"}
	tests := []struct {
		name    string
		matches []ProfileMatch
		want    string
	}{
		{"unknown profile", []ProfileMatch{{Profile: "c"}}, `profile "c": no such profile`},
		{"namespace claimed twice", []ProfileMatch{{Profile: "a", Match: Match{Namespaces: []string{"x"}}}, {Profile: "b", Match: Match{Namespaces: []string{"x"}}}},
			`profile "b": match.namespaces: "x" is already matched by profile "a"`},
		{"host claimed twice", []ProfileMatch{{Profile: "a", Match: Match{Namespaces: []string{"x"}, Hosts: []string{"h.example"}}}, {Profile: "b", Match: Match{Namespaces: []string{"x"}, Hosts: []string{"H.example"}}}},
			`profile "b": match.hosts: "H.example" of "x" is already matched by profile "a"`}, // as b wrote it
		{"suffix claimed twice", []ProfileMatch{{Profile: "a", Match: Match{ServiceAccounts: []string{"x/y"}, Hosts: []string{"*.x.example"}}}, {Profile: "b", Match: Match{ServiceAccounts: []string{"x/y"}, Hosts: []string{"*.x.example"}}}},
			`profile "b": match.hosts: "*.x.example" of "x/y" is already matched by profile "a"`},
		{"hosts without an identity", []ProfileMatch{{Profile: "a", Match: Match{Hosts: []string{"cms.example.com"}}}},
			`profile "a": match.hosts: needs match.namespaces or match.serviceAccounts`},
		{"bad service account", []ProfileMatch{{Profile: "a", Match: Match{ServiceAccounts: []string{"no-slash"}}}},
			`profile "a": match.serviceAccounts: "no-slash" is not <namespace>/<service account>`},
		{"bad namespace", []ProfileMatch{{Profile: "a", Match: Match{Namespaces: []string{"Bad_NS"}}}}, `match.namespaces: "Bad_NS" is not a namespace name`},
		{"bad host, as written", []ProfileMatch{{Profile: "a", Match: Match{Namespaces: []string{"x"}, Hosts: []string{"A b"}}}}, `match.hosts: "A b" is not a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSelector("", known, tt.matches)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// Each error names its profile and carries its field path as data, so a
// caller locates it without reading the message.
func TestSelectorErrorsAreTyped(t *testing.T) {
	_, err := NewSelector("", []string{"default", "a", "b"}, []ProfileMatch{
		{Profile: "a", Match: Match{Namespaces: []string{"x"}, Hosts: []string{"Bad_Host"}}},
		{Profile: "b", Match: Match{ServiceAccounts: []string{"no-slash"}}},
	})
	require.Error(t, err)
	type located struct{ profile, path, msg string }
	var got []located
	for _, e := range fielderr.Split(err) {
		var pe *inspector.ProfileError
		require.ErrorAs(t, e, &pe)
		var fe *fielderr.Error
		require.ErrorAs(t, pe.Err, &fe)
		got = append(got, located{pe.Profile, fe.Path.String(), fe.Err.Error()})
	}
	require.Equal(t, []located{
		{"a", "match.hosts", `"Bad_Host" is not a host name or *.suffix`},
		{"b", "match.serviceAccounts", `"no-slash" is not <namespace>/<service account>`},
	}, got)
}

// TestUpdateSwapsRulesAndSelection: after Update, checks use the new rule
// set and the new selection together.
func TestUpdateSwapsRulesAndSelection(t *testing.T) {
	ts := newTestServer(t, testEngine(t), nil)
	ctx := context.Background()
	sqli := loadCheckRequest(t, "http11.json")
	resp, err := ts.Check(ctx, sqli)
	require.NoError(t, err)
	require.Equal(t, "deny", resp.GetDynamicMetadata().AsMap()[MetaDecision])

	rs, err := inspector.Compile(inspector.Profile{}, inspector.Profile{Name: "relaxed", Exclusions: []inspector.Exclusion{{Tags: []string{"attack-sqli"}}}})
	require.NoError(t, err)
	sel, err := NewSelector("", rs.Profiles(), []ProfileMatch{{Profile: "relaxed", Match: Match{Namespaces: []string{"default"}}}})
	require.NoError(t, err)
	ts.Update(rs, sel)

	resp, err = ts.Check(ctx, sqli)
	require.NoError(t, err)
	meta := resp.GetDynamicMetadata().AsMap()
	require.Equal(t, "relaxed", meta[MetaProfile])
	require.Equal(t, "allow", meta[MetaDecision])
	require.Equal(t, 1.0, testCounter(t, ts, "allow", "relaxed"))
}

func testCounter(t *testing.T, ts *testServer, decision, profile string) float64 {
	t.Helper()
	families, err := ts.reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != "meshwaf_checks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["decision"] == decision && labels["profile"] == profile {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestForgedHostKeepsDestinationProfile is the attack of issue 11: a SQL
// injection to workload orders (matched by no profile) with the Host of a
// detect-mode profile. The Host is the caller's to choose, so it must not
// move the check onto that profile: the default profile denies it.
func TestForgedHostKeepsDestinationProfile(t *testing.T) {
	sel, err := NewSelector("", []string{inspector.DefaultProfileName, "watch"}, []ProfileMatch{
		{Profile: "watch", Match: Match{ServiceAccounts: []string{"cms/editor"}, Hosts: []string{"cms.example.com"}}},
	})
	require.NoError(t, err)
	ts := newTestServer(t, testEngine(t), func(o *Options) { o.Selector = sel })
	ctx := context.Background()

	forged := loadCheckRequest(t, "http11.json") // the seed SQL injection
	forged.Attributes.Destination.Principal = "spiffe://cluster.local/ns/shop/sa/orders"
	forged.Attributes.Request.Http.Host = "cms.example.com"
	forged.Attributes.Request.Http.Headers[":authority"] = "cms.example.com"
	forged.Attributes.Request.Http.Headers["host"] = "cms.example.com"
	resp, err := ts.Check(ctx, forged)
	require.NoError(t, err)
	meta := resp.GetDynamicMetadata().AsMap()
	require.Equal(t, inspector.DefaultProfileName, meta[MetaProfile])
	require.Equal(t, "deny", meta[MetaDecision])

	// The same request to the workload the profile names is in detect mode.
	forged.Attributes.Destination.Principal = "spiffe://cluster.local/ns/cms/sa/editor"
	resp, err = ts.Check(ctx, forged)
	require.NoError(t, err)
	meta = resp.GetDynamicMetadata().AsMap()
	require.Equal(t, "watch", meta[MetaProfile])
	require.Equal(t, "detect", meta[MetaDecision])
}

// TestHeaderMapHostSelectsProfile: with encode_raw_headers Envoy sends the
// authority only in header_map; the Host there must narrow the destination
// identity's profile as it does when it comes in the headers map.
func TestHeaderMapHostSelectsProfile(t *testing.T) {
	sel, err := NewSelector("", []string{inspector.DefaultProfileName, "watch"}, []ProfileMatch{
		{Profile: "watch", Match: Match{Namespaces: []string{"shop"}, Hosts: []string{"www"}}},
	})
	require.NoError(t, err)
	ts := newTestServer(t, testEngine(t), func(o *Options) { o.Selector = sel })

	cr := loadCheckRequest(t, "header_map.json") // :authority www:8080 in header_map only
	cr.Attributes.Request.Http.Host = ""
	require.Empty(t, cr.Attributes.Request.Http.Headers)
	cr.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/shop/sa/web"}
	resp, err := ts.Check(context.Background(), cr)
	require.NoError(t, err)
	require.Equal(t, "watch", resp.GetDynamicMetadata().AsMap()[MetaProfile])

	cr.Attributes.Destination.Principal = "spiffe://cluster.local/ns/other/sa/web"
	resp, err = ts.Check(context.Background(), cr)
	require.NoError(t, err)
	require.Equal(t, inspector.DefaultProfileName, resp.GetDynamicMetadata().AsMap()[MetaProfile], "the host alone selects nothing")
}
