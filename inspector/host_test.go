package inspector

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHostname(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"db", "db"},
		{"db:8080", "db"},
		{"HOST", "HOST"},
		{"Api.Example.COM:443", "Api.Example.COM"},
		{"10.0.0.9:8080", "10.0.0.9"},
		{"::1", "::1"},
		{"fe80::1:2", "fe80::1:2"},
		{"[::1]", "::1"},
		{"[::1]:8080", "::1"},
		{"[::1", "[::1"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, Hostname(tt.in), "Hostname(%q)", tt.in)
	}
}

func TestAddHostHeader(t *testing.T) {
	tests := []struct {
		name    string
		headers []Header
		host    string
		want    []Header
	}{
		{"appended", []Header{{Name: "accept", Value: "*/*"}}, "db:8080", []Header{{Name: "accept", Value: "*/*"}, {Name: "host", Value: "db:8080"}}},
		{"empty host kept as an empty header", nil, "", []Header{{Name: "host", Value: ""}}},
		{"a host header is kept", []Header{{Name: "Host", Value: "a"}}, "b", []Header{{Name: "Host", Value: "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{Headers: tt.headers}
			r.AddHostHeader(tt.host)
			require.Equal(t, tt.host, r.Host)
			require.Equal(t, tt.want, r.Headers)
		})
	}
}
