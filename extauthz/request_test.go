package extauthz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

const seedSQLiPath = "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"

func TestRequestFrom(t *testing.T) {
	tests := []struct {
		fixture  string
		wantHTTP bool
		want     inspector.Request
	}{
		{
			fixture:  "http11.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "8f1c2e8a-1111-4a5b-9c3d-000000000001", Method: "GET", URI: seedSQLiPath,
				Protocol: "HTTP/1.1", Host: "db.default.svc.cluster.local:8080",
				Headers: []inspector.Header{
					{Name: "accept", Value: "*/*"},
					{Name: "user-agent", Value: "curl/8.5.0"},
					{Name: "x-forwarded-proto", Value: "http"},
					{Name: "x-request-id", Value: "8f1c2e8a-1111-4a5b-9c3d-000000000001"},
					{Name: "host", Value: "db.default.svc.cluster.local:8080"},
				},
				Source:      inspector.Peer{Address: "10.0.0.5", Port: 41234, Principal: "spiffe://cluster.local/ns/default/sa/www"},
				Destination: inspector.Peer{Address: "10.0.0.9", Port: 8080, Principal: "spiffe://cluster.local/ns/default/sa/db"},
			},
		},
		{
			// HTTP/2: no host field, :authority becomes the Host.
			fixture:  "http2.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "req-h2", Method: "POST", URI: "/v1/login", Protocol: "HTTP/2", Host: "auth:8080",
				Headers: []inspector.Header{
					{Name: "content-length", Value: "27"},
					{Name: "content-type", Value: "application/json"},
					{Name: "cookie", Value: "a=1; b=2"},
					{Name: "x-envoy-auth-partial-body", Value: "false"},
					{Name: "host", Value: "auth:8080"},
				},
				Body:        []byte(`{"user":"joe","pin":"1234"}`),
				Source:      inspector.Peer{Address: "10.0.0.5", Port: 50000},
				Destination: inspector.Peer{Address: "10.0.0.9", Port: 8080},
			},
		},
		{
			// encode_raw_headers: header_map wins, raw values, repeats kept, order kept.
			fixture:  "header_map.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "req-raw", Method: "GET", URI: "/search?q=a", Protocol: "HTTP/1.1", Host: "www:8080",
				Headers: []inspector.Header{
					{Name: "accept", Value: "text/html"},
					{Name: "x-tag", Value: "one"},
					{Name: "x-tag", Value: "two"},
					{Name: "x-request-id", Value: "req-raw"},
					{Name: "host", Value: "www:8080"},
				},
			},
		},
		{
			// pack_as_bytes: raw_body carries bytes that are not UTF-8.
			fixture:  "raw_body.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "req-raw-body", Method: "POST", URI: "/upload", Protocol: "HTTP/1.1", Host: "db:8080",
				Headers: []inspector.Header{
					{Name: "content-type", Value: "application/octet-stream"},
					{Name: "x-envoy-auth-partial-body", Value: "false"},
					{Name: "host", Value: "db:8080"},
				},
				Body: []byte{0x00, 0x01, 0xfe, 0xff},
			},
		},
		{
			fixture:  "partial_body.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "req-partial", Method: "POST", URI: "/form", Protocol: "HTTP/1.1", Host: "db:8080",
				Headers: []inspector.Header{
					{Name: "content-type", Value: "application/x-www-form-urlencoded"},
					{Name: "x-envoy-auth-partial-body", Value: "true"},
					{Name: "host", Value: "db:8080"},
				},
				Body:          []byte("a=1&b=2"),
				BodyTruncated: true,
			},
		},
		{
			// An empty :authority stays an empty Host header (CRS 920290),
			// not a missing one.
			fixture:  "empty_authority.json",
			wantHTTP: true,
			want: inspector.Request{
				ID: "req-empty-host", Method: "GET", URI: "/", Protocol: "HTTP/1.1",
				Headers: []inspector.Header{{Name: "accept", Value: "*/*"}, {Name: "x-request-id", Value: "req-empty-host"}, {Name: "host", Value: ""}},
			},
		},
		{fixture: "tcp.json", wantHTTP: false},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			cr := loadCheckRequest(t, tt.fixture)
			got, _, ok := requestFrom(cr)
			require.Equal(t, tt.wantHTTP, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestRequestFromNilSafe(t *testing.T) {
	_, _, ok := requestFrom(nil)
	require.False(t, ok)
}

func TestHostKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"db.default.svc.cluster.local:8080", "db.default.svc.cluster.local"},
		{"HOST", "host"},
		{"CMS.Example.com:8080", "cms.example.com"},
		{"::1", "::1"}, // bare IPv6: no port to cut (was ":" before the two strip functions became one)
		{"[::1]:8080", "::1"},
		{"[::1]", "::1"},
		{"10.0.0.9:80", "10.0.0.9"},
		{"", ""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, hostKey(tt.in), "hostKey(%q)", tt.in)
	}
}

// TestProfileHintFrom: requestFrom reads the selection facts from the same
// places as the request, whichever way Envoy encoded the headers.
func TestProfileHintFrom(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(cr *authv3.CheckRequest)
		want   ProfileHint
	}{
		{"attributes host", func(cr *authv3.CheckRequest) {
			cr.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://td/ns/shop/sa/web"}
			cr.Attributes.Request.Http.Host = "WWW.Example.com:8443"
		}, ProfileHint{Destination: Identity{Namespace: "shop", ServiceAccount: "web"}, Host: "www.example.com"}},
		{"header_map :authority", func(cr *authv3.CheckRequest) {
			cr.Attributes.Request.Http.Host = ""
		}, ProfileHint{Host: "www"}},
		{"context extension, malformed principal", func(cr *authv3.CheckRequest) {
			cr.Attributes.ContextExtensions = map[string]string{ContextKeyProfile: "watch"}
			cr.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://td/ns/shop"}
		}, ProfileHint{Extension: "watch", Host: "www"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := loadCheckRequest(t, "header_map.json")
			tt.mutate(cr)
			_, got, ok := requestFrom(cr)
			require.True(t, ok)
			require.Equal(t, tt.want, got)
		})
	}
}
