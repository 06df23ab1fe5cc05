// Package corpus holds the requests that the benchmarks of several packages
// share, so figures from in-process and gRPC runs measure the same input.
// It is test support: product code does not import it.
package corpus

import (
	"fmt"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/checkreq"
)

// SeedSQLiURI is the SQL injection of the seed walkthrough.
const SeedSQLiURI = "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"

// Bench names the benchmark requests.
var Bench = []struct {
	Name    string
	Request func() inspector.Request
}{
	{"GET", Get},
	{"JSON1KiB", JSON1KiB},
	{"SQLi", SQLi},
}

func base(method, uri string) inspector.Request {
	return inspector.Request{
		ID:          "bench-0001",
		Method:      method,
		URI:         uri,
		Protocol:    "HTTP/1.1",
		Host:        "auth.shop.svc.cluster.local:8080",
		Source:      inspector.Peer{Address: "10.0.0.5", Port: 41000, Principal: "spiffe://cluster.local/ns/shop/sa/www"},
		Destination: inspector.Peer{Address: "10.0.0.9", Port: 8080, Principal: "spiffe://cluster.local/ns/shop/sa/auth"},
	}
}

// Get is a GET with ten ordinary headers.
func Get() inspector.Request {
	r := base("GET", "/api/v1/users/42?expand=roles&fields=id,name")
	r.Headers = []inspector.Header{
		{Name: "host", Value: r.Host},
		{Name: "user-agent", Value: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		{Name: "accept", Value: "application/json"},
		{Name: "accept-encoding", Value: "gzip, deflate, br"},
		{Name: "accept-language", Value: "en-US,en;q=0.9"},
		{Name: "cache-control", Value: "no-cache"},
		{Name: "x-request-id", Value: "7d4bd6a2-9c1e-4b8e-9f1a-2c3d4e5f6a7b"},
		{Name: "x-b3-traceid", Value: "80f198ee56343ba864fe8b2a57d3eff7"},
		{Name: "x-forwarded-proto", Value: "http"},
		{Name: "cookie", Value: "session=3f2a9c1b7e; theme=dark"},
	}
	return r
}

// JSON1KiB is a POST of about 1 KiB of JSON with 54 leaf values.
func JSON1KiB() inspector.Request {
	r := base("POST", "/api/v1/orders")
	body := JSONBody(54)
	r.Headers = []inspector.Header{
		{Name: "host", Value: r.Host},
		{Name: "user-agent", Value: "shop-www/1.4.2"},
		{Name: "accept", Value: "application/json"},
		{Name: "content-type", Value: "application/json"},
		{Name: "content-length", Value: fmt.Sprint(len(body))},
	}
	r.Body = body
	return r
}

// SQLi is the seed's SQL injection as a GET.
func SQLi() inspector.Request {
	r := Get()
	r.URI = SeedSQLiURI
	return r
}

// JSONBody returns a JSON document with n leaf values of ordinary data:
// an order with items, each leaf 10-20 bytes.
func JSONBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"order":{"id":"ord-20261124-0001","customer":"cust-4821","currency":"EUR","items":[`)
	leaves := 3
	for i := 0; leaves < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		left := n - leaves
		fields := []string{
			fmt.Sprintf(`"sku":"SKU-%05d"`, 10000+i*37),
			fmt.Sprintf(`"qty":%d`, 1+i%4),
			fmt.Sprintf(`"price":%d.%02d`, 3+i%40, (i*17)%100),
			fmt.Sprintf(`"name":"Item number %d"`, i),
			`"gift":false`,
			fmt.Sprintf(`"note":"deliver by day %d"`, 1+i%28),
		}
		if left < len(fields) {
			fields = fields[:left]
		}
		leaves += len(fields)
		b.WriteString("{" + strings.Join(fields, ",") + "}")
	}
	b.WriteString("]}}")
	return []byte(b.String())
}

// CheckRequest is the CheckRequest Envoy sends for r: its Host as
// :authority, its other headers, source and destination with principals.
func CheckRequest(r inspector.Request) *authv3.CheckRequest {
	headers := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		if h.Name != "host" {
			headers[h.Name] = h.Value
		}
	}
	peer := func(p inspector.Peer) *authv3.AttributeContext_Peer {
		return checkreq.Peer(p.Address, uint32(p.Port), p.Principal)
	}
	return checkreq.HTTP{
		StreamID: r.ID, Method: r.Method, Path: r.URI, Authority: r.Host, Host: r.Host, Protocol: r.Protocol,
		Headers: headers, Body: string(r.Body), Source: peer(r.Source), Destination: peer(r.Destination),
	}.CheckRequest()
}
