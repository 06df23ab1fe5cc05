package extauthz

import (
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/defaults"
)

// Header names with a meaning in Envoy's CheckRequest.
const (
	headerPartialBody = "x-envoy-auth-partial-body"
	headerRequestID   = "x-request-id"
	// ContextKeyProfile is the context_extensions key that names a profile.
	ContextKeyProfile = defaults.ProfileContextKey
)

// ProfileHint is what profile selection reads of a CheckRequest. requestFrom
// takes it from the CheckRequest together with the inspector.Request, so the
// proto is read once.
type ProfileHint struct {
	// Extension is the ContextKeyProfile context extension ("" when absent).
	Extension string
	// Destination is the destination workload's identity, parsed from its
	// SPIFFE principal, which the mesh sets; zero when the principal is
	// absent or not spiffe://<trust domain>/ns/<ns>/sa/<sa>.
	Destination Identity
	// Host is the request's Host as the caller sent it (attributes host,
	// else :authority from the headers or header_map), lower case and
	// without port.
	Host string
}

// Identity is a Kubernetes workload identity: namespace and service account.
type Identity struct {
	Namespace, ServiceAccount string
}

// requestFrom maps an Envoy CheckRequest onto an inspector.Request and the
// hint profile selection needs. ok is false when the CheckRequest carries
// no HTTP request (Envoy's network-level ext_authz, which Istio's CUSTOM
// action also installs). It is a pure function: it reads req and never
// retains it.
func requestFrom(req *authv3.CheckRequest) (out inspector.Request, hint ProfileHint, ok bool) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	if h == nil {
		return inspector.Request{}, ProfileHint{}, false
	}
	out = inspector.Request{
		ID:          h.GetId(),
		Method:      h.GetMethod(),
		URI:         h.GetPath(),
		Protocol:    h.GetProtocol(),
		Host:        h.GetHost(),
		Source:      peerFrom(attrs.GetSource()),
		Destination: peerFrom(attrs.GetDestination()),
	}

	var pseudo map[string]string
	if hm := h.GetHeaderMap(); hm != nil && len(hm.GetHeaders()) > 0 {
		out.Headers, pseudo = headersFromMap(hm)
	} else {
		out.Headers, pseudo = headersFromStrings(h.GetHeaders())
	}
	for _, hd := range out.Headers {
		switch hd.Name {
		case headerPartialBody:
			out.BodyTruncated = hd.Value == "true"
		case headerRequestID:
			// Envoy fills http.id with its internal stream id; the id that
			// access logs and the upstream share is x-request-id.
			out.ID = hd.Value
		}
	}
	if out.Method == "" {
		out.Method = pseudo[":method"]
	}
	if out.URI == "" {
		out.URI = pseudo[":path"]
	}
	authority, hasAuthority := pseudo[":authority"]
	if out.Host == "" {
		out.Host = authority
	}
	// HTTP/2 has no Host header and Envoy turns HTTP/1's Host into
	// :authority; CRS expects Host, so give it one, empty when the request
	// had an empty authority (CRS tells missing from empty: 920280, 920290).
	if out.Host != "" || hasAuthority {
		out.AddHostHeader(out.Host)
	}
	if out.Protocol == "" {
		out.Protocol = "HTTP/1.1"
	}
	if rb := h.GetRawBody(); len(rb) > 0 {
		out.Body = rb
	} else if b := h.GetBody(); b != "" {
		out.Body = []byte(b)
	}
	ns, sa, _ := spiffeIdentity(out.Destination.Principal)
	hint = ProfileHint{
		Extension:   attrs.GetContextExtensions()[ContextKeyProfile],
		Destination: Identity{Namespace: ns, ServiceAccount: sa},
		Host:        hostKey(out.Host),
	}
	return out, hint, true
}

// hostKey is a Host value as profile matches name hosts: lower case, no port.
func hostKey(host string) string { return strings.ToLower(inspector.Hostname(host)) }

// headersFromStrings turns Envoy's merged header map into a list sorted by
// name. Pseudo-headers and Envoy's own partial-body marker are returned
// apart, as the upstream never sees them as headers.
func headersFromStrings(m map[string]string) ([]inspector.Header, map[string]string) {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]inspector.Header, 0, len(names))
	pseudo := map[string]string{}
	for _, k := range names {
		out, pseudo = addHeader(out, pseudo, k, m[k])
	}
	return out, pseudo
}

// headersFromMap reads header_map (encode_raw_headers): one entry per header
// line, raw_value preferred over value, order kept.
func headersFromMap(hm *corev3.HeaderMap) ([]inspector.Header, map[string]string) {
	out := make([]inspector.Header, 0, len(hm.GetHeaders()))
	pseudo := map[string]string{}
	for _, hv := range hm.GetHeaders() {
		v := hv.GetValue()
		if raw := hv.GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		out, pseudo = addHeader(out, pseudo, strings.ToLower(hv.GetKey()), v)
	}
	return out, pseudo
}

func addHeader(out []inspector.Header, pseudo map[string]string, name, value string) ([]inspector.Header, map[string]string) {
	if strings.HasPrefix(name, ":") {
		if _, seen := pseudo[name]; !seen {
			pseudo[name] = value
		}
		return out, pseudo
	}
	return append(out, inspector.Header{Name: name, Value: value}), pseudo
}

func peerFrom(p *authv3.AttributeContext_Peer) inspector.Peer {
	sa := p.GetAddress().GetSocketAddress()
	return inspector.Peer{
		Address:   sa.GetAddress(),
		Port:      int(sa.GetPortValue()),
		Principal: p.GetPrincipal(),
	}
}
