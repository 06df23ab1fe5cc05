package inspector

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/width"
)

// Profiles of the beyond-CRS tests: the default, and each feature off alone.
const (
	profNoViews   = "no-views"
	profNoHeaders = "no-headers"
	profNoXMLAttr = "no-xml-attributes"
	profNoFiles   = "no-file-names"
	profXMLDecl   = "allow-xml-declarations"
)

func beyondProfiles() []Profile {
	off := false
	// Corroboration is off in the profiles that turn one feature off: its
	// paranoia-level-2 rules catch some of the attacks on their own.
	return []Profile{
		{Name: profNoViews, DecodedViews: &off, Corroboration: &off},
		{Name: profNoHeaders, HeadersAsArgs: HeadersAsArgs{Enabled: &off}, Corroboration: &off},
		{Name: profNoXMLAttr, XMLAttributes: &off, Corroboration: &off},
		{Name: profNoFiles, FileNames: &off, Corroboration: &off},
		{Name: profXMLDecl, AllowXMLDeclarations: true, Corroboration: &off},
		Profile{Name: profCRSOnly}.CRSOnly(),
	}
}

var beyondShared struct {
	once sync.Once
	rs   *RuleSet
	err  error
}

func beyondRuleSet(tb testing.TB) *RuleSet {
	tb.Helper()
	beyondShared.once.Do(func() { beyondShared.rs, beyondShared.err = Compile(Profile{}, beyondProfiles()...) })
	require.NoError(tb, beyondShared.err)
	return beyondShared.rs
}

// beyondCase is a request the default profile decides want, and the
// profile off (with one feature off) decides wantOff.
type beyondCase struct {
	name          string
	req           Request
	off           string
	want, wantOff Decision
	wantRule      int    // among the default profile's rule ids, when set
	wantIn        string // in the data of one of the default profile's matches, when set
}

func b64(s string) string    { return base64.StdEncoding.EncodeToString([]byte(s)) }
func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
func qesc(s string) string   { return url.QueryEscape(s) }

// entities writes every rune of s as a decimal HTML entity.
func entities(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "&#%d;", r)
	}
	return b.String()
}

const (
	sqli2Payload = "1' or '1'='1"
	xss2Payload  = "<img src=x onerror=alert(1)>"
	jwtSample    = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	uuidSample   = "123e4567-e89b-12d3-a456-426614174000"
	hexSample    = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	keySample    = "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMIK7MDENGbPxRfiCY"
	xmlCT        = "application/xml"
	// proseSample is a quotation whose form encoding, '+' kept, libinjection reads as SQL.
	proseSample = `"...[Linux's] capacity to talk via any medium except smoke signals." (By Dr. Greg Wettstein, Roger Maris Cancer Center)`
	// xssPlusPayload's base64 has a '+'.
	xssPlusPayload = "<svg onload=alert(1)>?"
)

func beyondCases() []beyondCase {
	mp := func(filename string) Request {
		body := "------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"" + filename + "\"\r\n" +
			"Content-Type: image/png\r\n\r\nPNGDATA\r\n------meshwafBoundary7MA4YWxk--\r\n"
		return send("POST", "HTTP/1.1", "/api/v1/avatar", multipartCT, body)
	}
	return []beyondCase{
		// Decoded views: the attack decoded is denied with views on.
		{name: "b64/query/xss", req: get("HTTP/1.1", "/?data="+qesc(b64(xssPayload))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 941100, wantIn: "data:b64"},
		{name: "b64/query/sqli", req: get("HTTP/1.1", "/?filter="+qesc(b64(sqliPayload))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100},
		{name: "b64url/cookie/sqli", req: get("HTTP/1.1", "/", "Cookie", "state="+b64url(sqli2Payload+" -- x")), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100},
		{name: "b64-plus/cookie/xss", req: get("HTTP/1.1", "/", "Cookie", "state="+strings.ReplaceAll(b64(xssPlusPayload), "=", "%3D")), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 941100, wantIn: "cookie:state:url2:b64"},
		{name: "b64/json/rce", req: send("POST", "HTTP/1.1", "/api/v1/jobs", "application/json", `{"cmd":"`+b64(rcePayload)+`"}`), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 932160},
		{name: "b64/form/lfi", req: send("POST", "HTTP/1.1", "/api/v1/files", formCT, "path="+qesc(b64(lfiPayload))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 930100},
		{name: "b64/header/xss", req: get("HTTP/1.1", "/", "X-Payload", b64(xssPayload)), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 941100},
		{name: "b64/xml-text/sqli", req: send("POST", "HTTP/1.1", "/api/v1/orders", xmlCT, `<order><note>`+b64(sqliPayload)+`</note></order>`), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100},
		{name: "b64-of-url/query/sqli", req: get("HTTP/1.1", "/?q="+qesc(b64(qesc(qesc(sqliPayload))))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100},
		{name: "url2/query/sqli", req: get("HTTP/1.1", "/?q="+qesc(qesc(qesc(sqliPayload)))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100, wantIn: "q:url2"},
		{name: "url2/query/rce", req: get("HTTP/1.1", "/?host="+qesc(qesc(qesc(rcePayload)))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 932160},
		{name: "html/query/sqli", req: get("HTTP/1.1", "/?q="+qesc(entities(sqliPayload))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 942100, wantIn: "q:html"},
		{name: "html/json/rce", req: send("POST", "HTTP/1.1", "/api/v1/jobs", "application/json", `{"cmd":"`+entities(rcePayload)+`"}`), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 932160},
		{name: "nfkc/query/xss", req: get("HTTP/1.1", "/?q="+qesc(width.Widen.String(xss2Payload))), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 941100, wantIn: "q:nfkc"},
		{name: "nfkc/json/xss", req: send("POST", "HTTP/1.1", "/api/v1/comments", "application/json", `{"text":`+jsonString(width.Widen.String(xss2Payload))+`}`), off: profNoViews, want: Deny, wantOff: Allow, wantRule: 941100},

		// Headers as arguments.
		{name: "header/sqli", req: get("HTTP/1.1", "/", "X-Api-Note", sqliPayload), off: profNoHeaders, want: Deny, wantOff: Allow, wantRule: 942100, wantIn: "header:x-api-note"},
		{name: "header/rce", req: get("HTTP/2", "/", "x-cmd", rcePayload), off: profNoHeaders, want: Deny, wantOff: Allow, wantRule: 932160},
		{name: "header/nfkc-sqli", req: get("HTTP/1.1", "/", "X-Filter", width.Widen.String(sqliPayload)), off: profNoHeaders, want: Deny, wantOff: Allow, wantRule: 942100},

		// XML attributes and declarations, multipart file names.
		{name: "xml-attribute/sqli", req: send("POST", "HTTP/1.1", "/api/v1/search", xmlCT, `<?xml version="1.0"?><query filter="`+sqliPayload+`">books</query>`), off: profNoXMLAttr, want: Deny, wantOff: Allow, wantRule: 942100, wantIn: "xml:@"},
		{name: "xml-attribute/xss", req: send("POST", "HTTP/1.1", "/api/v1/profile", xmlCT, `<user name="&lt;script&gt;alert(document.cookie)&lt;/script&gt;">ada</user>`), off: profNoXMLAttr, want: Deny, wantOff: Allow, wantRule: 941100},
		{name: "xml-doctype/xxe", req: send("POST", "HTTP/1.1", "/api/v1/orders", xmlCT, `<?xml version="1.0"?><!DOCTYPE order [<!ENTITY xxe SYSTEM "file:///etc/hostname">]><order>&xxe;</order>`), off: profXMLDecl, want: Deny, wantOff: Allow, wantRule: RuleXMLDeclaration},
		{name: "xml-doctype/soap-lowercase", req: send("POST", "HTTP/1.1", "/api/v1/import", "application/soap+xml", "\n<!doctype x [<!entity a \"b\">]><x>&a;</x>"), off: profXMLDecl, want: Deny, wantOff: Allow, wantRule: RuleXMLDeclaration},
		{name: "multipart-filename/xss", req: mp("<script>alert(document.cookie)</script>.png"), off: profNoFiles, want: Deny, wantOff: Allow, wantRule: 941100, wantIn: "multipart:filename"},

		// Benign values stay allowed with everything on.
		// A cookie's or header's first percent decoding is form decoding:
		// '+' joined prose is no SQL (942100 matched it with '+' kept).
		{name: "benign/form-encoded-cookie", req: get("HTTP/1.1", "/", "Cookie", "session=3f2a9c1b7e; note="+qesc(proseSample)), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/form-encoded-header", req: get("HTTP/1.1", "/", "X-Note", qesc(proseSample)), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/jwt-header", req: get("HTTP/1.1", "/", "Authorization", "Bearer "+jwtSample, "X-Id-Token", jwtSample), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/jwt-query", req: get("HTTP/1.1", "/?token="+jwtSample), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/uuid-hex-key", req: get("HTTP/1.1", "/?id="+uuidSample+"&sha="+hexSample+"&key="+keySample, "X-Correlation-Id", uuidSample, "X-Api-Key", keySample), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/b64-text", req: get("HTTP/1.1", "/?cursor="+qesc(b64(`{"page":2,"size":50,"sort":"name"}`))+"&note="+qesc(b64("hello world, ship it on monday"))), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/b64-binary", req: get("HTTP/1.1", "/?sig="+qesc(base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")))), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/encoded-url-header", req: get("HTTP/1.1", "/", "X-Return-To", "https%3A%2F%2Fshop.example.com%2Fcart%3Fitem%3D42", "X-Tenant", "acme-corp"), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/html-and-accents", req: send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"title":"AT&amp;T &eacute;t&eacute;","body":"Café crème, naïve façade – ﬁne"}`), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/mesh-headers", req: get("HTTP/2", "/api/v1/items", "x-envoy-attempt-count", "1", "x-forwarded-client-cert", `By=spiffe://cluster.local/ns/a/sa/b;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/c/sa/d`,
			"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7", "x-request-id", uuidSample, "baggage", "userId=alice,isProduction=false"), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/xml-attributes", req: send("POST", "HTTP/1.1", "/api/v1/orders", xmlCT, `<?xml version="1.0" encoding="UTF-8"?><order id="A-1001" currency="EUR"><item sku="X-42" qty="2">Blue mug</item></order>`), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/html-escaped-php-tag", req: get("HTTP/1.1", "/?foo="+qesc("&lt;? should not trigger")), off: profCRSOnly, want: Allow, wantOff: Allow},
		{name: "benign/multipart-filename", req: mp("holiday photo (2).png"), off: profCRSOnly, want: Allow, wantOff: Allow},
	}
}

// TestBeyondCRS: each inspection beyond CRS catches its attacks, and turning
// that one feature off lets them through; benign values pass either way.
func TestBeyondCRS(t *testing.T) {
	rs := beyondRuleSet(t)
	for _, tc := range beyondCases() {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", tc.req)
			require.Equal(t, tc.want, v.Decision, "score %d, rules %v", v.AnomalyScore, v.RuleIDs())
			if tc.wantRule != 0 {
				require.Contains(t, v.RuleIDs(), tc.wantRule)
			}
			if tc.wantIn != "" {
				found := false
				for _, m := range v.Matches {
					found = found || strings.Contains(m.Data, tc.wantIn)
				}
				require.True(t, found, "no match data names %q: %+v", tc.wantIn, v.Matches)
			}
			off := inspect(t, rs, tc.off, tc.req)
			require.Equal(t, tc.wantOff, off.Decision, "%s: score %d, rules %v", tc.off, off.AnomalyScore, off.RuleIDs())
		})
	}
}

// TestBeyondCRSPreselect: the arguments meshwaf adds are in the
// transaction before rule pre-selection runs: with it off, every verdict
// is the same.
func TestBeyondCRSPreselect(t *testing.T) {
	off := false
	full, err := Compile(Profile{Preselect: &off})
	require.NoError(t, err)
	rs := beyondRuleSet(t)
	for _, tc := range beyondCases() {
		requireSameVerdict(t, tc.name, inspect(t, rs, "", tc.req), inspect(t, full, "", tc.req))
	}
}

// TestBeyondCRSArgumentsLimit: headers and views count toward the
// arguments limit.
func TestBeyondCRSArgumentsLimit(t *testing.T) {
	// 6 headers and 4 query arguments: within the limit; the 2 headers
	// as arguments and b's view make 7 arguments.
	rs, err := Compile(Profile{ArgumentsLimit: 6}, Profile{Name: "off", ArgumentsLimit: 6}.CRSOnly())
	require.NoError(t, err)
	req := get("HTTP/1.1", "/?a=1&c=3&d=4&b="+qesc(b64("hello there, general")), "X-One", "1", "X-Two", "2")
	v := inspect(t, rs, "", req)
	require.Equal(t, Deny, v.Decision)
	require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)
	require.Equal(t, Allow, inspect(t, rs, "off", req).Decision)
}

// TestBeyondCRSExclusionCoversViews: excluding an argument, cookie or
// header from rules also excludes what meshwaf derives from it.
func TestBeyondCRSExclusionCoversViews(t *testing.T) {
	rs, err := Compile(Profile{Exclusions: []Exclusion{
		{Tags: []string{"OWASP_CRS"}, Targets: []string{"ARGS:data"}},
		{Tags: []string{"OWASP_CRS"}, Targets: []string{"REQUEST_COOKIES:state"}},
		{Tags: []string{"OWASP_CRS"}, Targets: []string{"REQUEST_HEADERS:x-api-note"}, PathPrefix: "/notes"},
	}})
	require.NoError(t, err)
	for _, tc := range []struct {
		req  Request
		want Decision
	}{
		{get("HTTP/1.1", "/?data="+qesc(b64(xssPayload))), Allow},
		{get("HTTP/1.1", "/?other="+qesc(b64(xssPayload))), Deny},
		{get("HTTP/1.1", "/", "Cookie", "state="+b64url(sqli2Payload+" -- x")), Allow},
		{get("HTTP/1.1", "/notes", "X-Api-Note", sqliPayload), Allow},
		{get("HTTP/1.1", "/other", "X-Api-Note", sqliPayload), Deny},
	} {
		v := inspect(t, rs, "", tc.req)
		require.Equal(t, tc.want, v.Decision, "%s %v: rules %v", tc.req.URI, tc.req.Headers[len(tc.req.Headers)-1], v.RuleIDs())
	}
}

func TestHeadersAsArgs(t *testing.T) {
	h := HeadersAsArgs{Include: []string{"x-forwarded-host", "Accept-Custom*"}, Exclude: []string{"x-internal-*", "X-Debug"}}
	for name, want := range map[string]bool{
		"x-api-note": true, "x-forwarded-host": true, "accept-custom-x": true, "accept": false, "accept-language": false,
		"x-internal-token": false, "x-debug": false, "x-envoy-original-path": false, ":authority": false, "traceparent": false,
		"x-b3-spanid": false, "authorization": false, "cookie": false, "user-agent": false, "grpc-timeout": false, "custom": true,
	} {
		require.Equal(t, want, h.headerAsArg(name), name)
	}
	off := false
	require.False(t, HeadersAsArgs{Enabled: &off}.headerAsArg("x-api-note"))

	err := Profile{HeadersAsArgs: HeadersAsArgs{Include: []string{"ok", "bad name", "*", "x-a"}, Exclude: []string{"x-a", "x(y"}}}.WithDefaults().Validate()
	require.Error(t, err)
	for _, path := range []string{"headersAsArgs.include[1]", "headersAsArgs.include[2]", "headersAsArgs.include[3]", "headersAsArgs.exclude[1]"} {
		require.ErrorContains(t, err, path)
	}
	require.NotContains(t, err.Error(), "include[0]")
	require.NoError(t, Profile{HeadersAsArgs: h}.WithDefaults().Validate())
}

func TestCRSOnlyDirectives(t *testing.T) {
	require.Contains(t, Directives(Profile{}.WithDefaults()), "@meshwafBodyArgs views,xml-attributes,file-names")
	require.NotContains(t, Directives(Profile{}.CRSOnly().WithDefaults()), "meshwafBodyArgs")
	off := false
	require.Contains(t, Directives(Profile{DecodedViews: &off, FileNames: &off}.WithDefaults()), "@meshwafBodyArgs xml-attributes\"")
}

// FuzzBeyondCRS feeds values encoded every way through the default
// profile as query argument, header and JSON leaf: verdicts stay valid and
// pre-selection exact. Seeds are the beyondCases' values.
func FuzzBeyondCRS(f *testing.F) {
	for _, tc := range beyondCases() {
		f.Add(tc.req.URI, fuzzHeader(tc.req, "X-Api-Note", "X-Payload", "X-Filter", "Cookie"), string(tc.req.Body))
	}
	rs := beyondRuleSet(f)
	off := false
	full, err := Compile(Profile{Preselect: &off})
	require.NoError(f, err)
	def := rs.Default()
	f.Fuzz(func(t *testing.T, value, header, body string) {
		for _, v := range []string{value, b64(value), qesc(qesc(value))} {
			req := send("POST", "HTTP/1.1", "/api?v="+qesc(v), "application/json", `{"v":`+jsonString(v)+`,"b":`+jsonString(body)+`}`, "X-Api-Note", header)
			a, err := rs.Inspect(t.Context(), req, "")
			require.NoError(t, err)
			requireValidVerdict(t, def, a)
			b, err := full.Inspect(t.Context(), req, "")
			require.NoError(t, err)
			require.Equal(t, a.Decision, b.Decision)
			require.Equal(t, a.RuleIDs(), b.RuleIDs())
		}
	})
}

func TestSourceTarget(t *testing.T) {
	for _, tc := range []struct{ v, k, want string }{
		{"ARGS", "q:b64", "ARGS:q"},
		{"ARGS_GET", "q:b64:url2", "ARGS_GET:q"},
		{"ARGS", "header:x-note", "REQUEST_HEADERS:x-note"},
		{"ARGS", "header:x-note:nfkc", "REQUEST_HEADERS:x-note"},
		{"ARGS", "cookie:sid:b64", "REQUEST_COOKIES:sid"},
		{"ARGS", "json.a.b:html", "ARGS:json.a.b"},
		{"ARGS", "q:other", "ARGS:q:other"},
		{"REQUEST_HEADERS", "x:b64", "REQUEST_HEADERS:x:b64"},
		{"REQUEST_URI", "", "REQUEST_URI"},
	} {
		require.Equal(t, tc.want, sourceTarget(tc.v, tc.k), "%s:%s", tc.v, tc.k)
	}
	v := inspect(t, beyondRuleSet(t), "", get("HTTP/1.1", "/?data="+qesc(b64(xssPayload)), "X-Api-Note", sqliPayload))
	var targets []string
	for _, m := range v.Matches {
		targets = append(targets, m.Targets...)
	}
	require.Contains(t, targets, "ARGS:data")
	require.Contains(t, targets, "REQUEST_HEADERS:x-api-note")
}
