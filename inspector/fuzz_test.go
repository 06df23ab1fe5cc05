package inspector

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// fuzzHeader returns the value of the first of names present in r.
func fuzzHeader(r Request, names ...string) string {
	for _, n := range names {
		for _, h := range r.Headers {
			if strings.EqualFold(h.Name, n) {
				return h.Value
			}
		}
	}
	return ""
}

// FuzzInspect feeds arbitrary methods, URIs, a header value (sent as
// Cookie and Referer), content types and bodies through the default
// profile. Seeds are the case table.
func FuzzInspect(f *testing.F) {
	for _, tc := range cases() {
		f.Add(tc.req.Method, tc.req.URI, fuzzHeader(tc.req, "Cookie", "Referer", "User-Agent"),
			fuzzHeader(tc.req, "Content-Type"), tc.req.Body)
	}
	rs := testRuleSet(f)
	def := rs.Default()
	f.Fuzz(func(t *testing.T, method, uri, header, contentType string, body []byte) {
		req := Request{
			Method: method, URI: uri, Protocol: "HTTP/1.1", Host: shopHost,
			Headers: []Header{
				{"Host", shopHost},
				{"User-Agent", clientUA},
				{"Accept", "*/*"},
				{"Cookie", header},
				{"Referer", header},
				{"Content-Type", contentType},
			},
			Body: body, Source: srcPeer, Destination: dstPeer,
		}
		v, err := rs.Inspect(context.Background(), req, "")
		if err != nil {
			if !errors.Is(err, ErrCanceled) {
				t.Fatalf("Inspect: %v", err)
			}
			return
		}
		requireValidVerdict(t, def, v)
	})
}
