package inspector_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshwaf/meshwaf/inspector"
)

// psGenerated is the number of generated requests (a tenth in -short).
func psGenerated() int {
	if testing.Short() {
		return 300
	}
	return 3000
}

// psSeed makes the generated requests the same in every run.
const psSeed = 15

// psRequests builds the generated requests: first every base unmutated
// under every profile and psUserTargets, then n mutations. A mutation picks a profile, takes
// a payload (or a slice of one; under a user-rule profile, half the time
// one its rules look for), encodes it one of the psEncodings ways and puts
// it into one of the psPlaces of an ordinary request.
func psRequests(t *testing.T, payloads []string, n int) []diffRequest {
	t.Helper()
	rng := rand.New(rand.NewPCG(psSeed, psSeed))
	profiles := psProfiles()
	var out []diffRequest
	for _, p := range psPlaces {
		if p.base == "" {
			continue
		}
		for _, prof := range profiles {
			req := psBase()
			p.put(&req, p.base, rng)
			out = append(out, diffRequest{Name: "gen/base/" + p.name, Profile: prof.Name, Req: req})
		}
	}
	for _, u := range psUserTargets {
		req := psBase()
		u.put(&req, u.value, rng)
		out = append(out, diffRequest{Name: "gen/user/" + u.name, Profile: u.profile, Req: req})
	}
	places, encs := map[string]int{}, map[string]int{}
	for range n {
		prof := profiles[rng.IntN(len(profiles))].Name
		payload := payloads[rng.IntN(len(payloads))]
		if strings.HasPrefix(prof, "user-") && rng.IntN(2) == 0 {
			payload = psUserPayloads[rng.IntN(len(psUserPayloads))]
		}
		if rng.IntN(4) == 0 && len(payload) > 12 { // a fragment
			i := rng.IntN(len(payload) - 8)
			payload = payload[i : i+8+rng.IntN(len(payload)-i-8+1)]
		}
		if rng.IntN(3) == 0 { // inside ordinary text
			payload = "id 42 " + payload + " ok"
		}
		enc := psEncodings[rng.IntN(len(psEncodings))]
		place := psPlaces[rng.IntN(len(psPlaces))]
		req := psBase()
		place.put(&req, enc.fn(payload, rng), rng)
		places[place.name]++
		encs[enc.name]++
		out = append(out, diffRequest{Name: fmt.Sprintf("gen/%s/%s", place.name, enc.name), Profile: prof, Req: req})
	}
	if n >= 1000 {
		for _, p := range psPlaces {
			require.Positive(t, places[p.name], "no generated request puts a payload into %s", p.name)
		}
		for _, e := range psEncodings {
			require.Positive(t, encs[e.name], "no generated request encodes a payload %s", e.name)
		}
	}
	return out
}

// psUserTargets are one request per user rule of psProfiles that it
// matches.
var psUserTargets = []struct {
	name, profile, value string
	put                  func(r *inspector.Request, v string, rng *rand.Rand)
}{
	{"10001", profUserTransform, "EV%69L", psPlaceFunc("query-value")},
	{"10002", profUserMultiMatch, "1 UNION/**/SELECT password", psPlaceFunc("form-value")},
	{"10004", profUserSkip, "1abc", psPlaceFunc("query-value")},
	{"10005", profUserSkip, "a<b", psPlaceFunc("cookie-value")},
	{"10003-skips-10004", profUserSkip, "curl/8.5.0", func(r *inspector.Request, v string, _ *rand.Rand) {
		psSetHeader(r, "user-agent", v)
		psSetHeader(r, "cookie", "theme=<b>")
		r.URI += "&n=1abc"
	}},
	{"10006", profUserNegated, "json", func(r *inspector.Request, v string, _ *rand.Rand) { psSetHeader(r, "accept", v) }},
	{"10007", profUserMultiMatch, "x-debug", psPlaceFunc("header-name")},
	{"10008", profUserNegated, "Bad Name!", psPlaceFunc("json-key")},
}

func psPlaceFunc(name string) func(r *inspector.Request, v string, rng *rand.Rand) {
	return func(r *inspector.Request, v string, rng *rand.Rand) {
		for _, p := range psPlaces {
			if p.name == name {
				p.put(r, v, rng)
				return
			}
		}
		panic("no place " + name)
	}
}

// psUserPayloads are what the user rules of psProfiles look for.
var psUserPayloads = []string{
	"evil", "EvIl", "ev%69l", "curl/8.5.0", "1", "a<b", "debug", "admin", "passwd",
	"1 UNION SELECT password FROM users", "10 union/**/select 1", "union&#x20;select",
}

// psBase is an ordinary GET from one mesh service to another.
func psBase() inspector.Request {
	r := ftwBase()
	r.Protocol = "HTTP/2"
	r.URI, r.Host = "/api/v1/items?page=2&sort=name", "shop.example.com"
	r.Headers = []inspector.Header{
		{Name: "host", Value: r.Host},
		{Name: "user-agent", Value: "shop-www/1.4.2"},
		{Name: "accept", Value: "application/json"},
		{Name: "accept-language", Value: "en-US,en;q=0.9"},
		{Name: "referer", Value: "https://shop.example.com/items"},
		{Name: "cookie", Value: "session=3f2a9c1b7e; theme=dark"},
		{Name: "x-request-id", Value: "7d4bd6a2-9c1e-4b8e-9f1a-2c3d4e5f6a7b"},
	}
	return r
}

// psPlace puts a value into one place of a request that CRS reads.
type psPlace struct {
	name string
	base string // an ordinary value for the unmutated request; "" adds none
	put  func(r *inspector.Request, v string, rng *rand.Rand)
}

func psSetHeader(r *inspector.Request, name, value string) {
	for i, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			r.Headers[i].Value = value
			return
		}
	}
	r.Headers = append(r.Headers, inspector.Header{Name: name, Value: value})
}

// psBody makes r a POST with body of content type ct.
func psBody(r *inspector.Request, ct string, body []byte) {
	r.Method, r.Body = "POST", body
	psSetHeader(r, "content-type", ct)
	psSetHeader(r, "content-length", strconv.Itoa(len(body)))
}

// psURIEscape escapes what would end a URI part (and what is not a byte a
// request target carries), keeping '%' and '+' as the encoding left them.
func psURIEscape(s, stop string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(stop, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

const psBoundary = "----psBoundary4f2a"

func psMultipart(name, filename, partCT, value string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nnotes\r\n", psBoundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"", psBoundary, name)
	if filename != "" {
		fmt.Fprintf(&b, "; filename=\"%s\"", filename)
	}
	b.WriteString("\r\n")
	if partCT != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", partCT)
	}
	fmt.Fprintf(&b, "\r\n%s\r\n--%s--\r\n", value, psBoundary)
	return []byte(b.String())
}

func psJSON(v any, rng *rand.Rand) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(rng.IntN(2) == 0)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func psXMLText(v string, rng *rand.Rand) string {
	if rng.IntN(3) == 0 && !strings.Contains(v, "]]>") {
		return "<![CDATA[" + v + "]]>"
	}
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(v))
	return b.String()
}

func psPB(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

// psGRPC frames msg as a gRPC body: flag, big-endian length, message;
// compressed with gzip when gz is set.
func psGRPC(r *inspector.Request, ct string, msg []byte, gz bool) {
	flag := byte(0)
	if gz {
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		_, _ = zw.Write(msg)
		_ = zw.Close()
		msg, flag = out.Bytes(), 1
		psSetHeader(r, "grpc-encoding", "gzip")
	}
	body := []byte{flag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	r.URI = "/shop.v1.ItemService/Search"
	psSetHeader(r, "te", "trailers")
	psBody(r, ct, append(body, msg...))
}

// psPlaces are the places CRS reads that the generated requests fill.
var psPlaces = []psPlace{
	{"query-value", "shoes", func(r *inspector.Request, v string, _ *rand.Rand) { r.URI += "&q=" + psURIEscape(v, "&#=") }},
	{"query-name", "", func(r *inspector.Request, v string, _ *rand.Rand) { r.URI += "&" + psURIEscape(v, "&#=") + "=1" }},
	{"query-bare", "", func(r *inspector.Request, v string, _ *rand.Rand) { r.URI = "/search?" + psURIEscape(v, "#") }},
	{"path-segment", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		r.URI = "/api/v1/items/" + psURIEscape(v, "?#") + "/reviews?page=1"
	}},
	{"filename", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		r.URI = "/static/" + psURIEscape(v, "?#/") + ".php"
	}},
	{"cookie-value", "dark", func(r *inspector.Request, v string, _ *rand.Rand) {
		psSetHeader(r, "cookie", "session=3f2a9c1b7e; theme="+v)
	}},
	{"cookie-name", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psSetHeader(r, "cookie", "session=3f2a9c1b7e; "+strings.ReplaceAll(v, "=", "%3D")+"=1")
	}},
	{"user-agent", "", func(r *inspector.Request, v string, _ *rand.Rand) { psSetHeader(r, "user-agent", v) }},
	{"referer", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psSetHeader(r, "referer", "https://shop.example.com/search?q="+v)
	}},
	{"accept", "", func(r *inspector.Request, v string, rng *rand.Rand) {
		if rng.IntN(2) == 0 {
			v = "text/html, " + v
		}
		psSetHeader(r, "accept", v)
	}},
	{"content-type", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "application/x-www-form-urlencoded; charset="+v, []byte("a=1&b=2"))
	}},
	{"header-value", "", func(r *inspector.Request, v string, _ *rand.Rand) { psSetHeader(r, "x-api-note", v) }},
	{"header-name", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psSetHeader(r, "x-"+strings.NewReplacer(":", "", "\r", "", "\n", "").Replace(v), "1")
	}},
	{"form-value", "name=Ada&email=ada%40example.com", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "application/x-www-form-urlencoded", []byte("name=Ada&note="+psURIEscape(v, "&=")))
	}},
	{"form-name", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "application/x-www-form-urlencoded", []byte("name=Ada&"+psURIEscape(v, "&=")+"=1"))
	}},
	{"json-value", `{"name":"Ada"}`, func(r *inspector.Request, v string, rng *rand.Rand) {
		psBody(r, "application/json", psJSON(map[string]any{"name": "Ada", "note": v, "tags": []any{"a", 1}}, rng))
	}},
	{"json-key", "", func(r *inspector.Request, v string, rng *rand.Rand) {
		psBody(r, "application/json; charset=utf-8", psJSON(map[string]any{"name": "Ada", v: true}, rng))
	}},
	{"json-nested", "", func(r *inspector.Request, v string, rng *rand.Rand) {
		psBody(r, "application/merge-patch+json", psJSON(map[string]any{"user": map[string]any{"address": []any{map[string]any{"city": v}}}}, rng))
	}},
	{"xml-text", "<item><name>Ada</name></item>", func(r *inspector.Request, v string, rng *rand.Rand) {
		cts := []string{"application/xml", "text/xml; charset=utf-8", "application/soap+xml"}
		psBody(r, cts[rng.IntN(len(cts))], []byte(`<?xml version="1.0"?><item><name>Ada</name><note>`+psXMLText(v, rng)+`</note></item>`))
	}},
	{"xml-attr", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(v))
		psBody(r, "application/xml", []byte(`<?xml version="1.0"?><item note="`+b.String()+`"><name>Ada</name></item>`))
	}},
	{"multipart-value", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "multipart/form-data; boundary="+psBoundary, psMultipart("comment", "", "", v))
	}},
	{"multipart-name", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "multipart/form-data; boundary="+psBoundary, psMultipart(strings.ReplaceAll(v, `"`, "'"), "", "", "x"))
	}},
	{"multipart-filename", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "multipart/form-data; boundary="+psBoundary, psMultipart("file", strings.ReplaceAll(v, `"`, "'"), "text/plain", "bring sunscreen"))
	}},
	{"multipart-part-header", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		psBody(r, "multipart/form-data; boundary="+psBoundary, psMultipart("file", "notes.txt", "text/plain; x="+strings.NewReplacer("\r", "", "\n", "").Replace(v), "bring sunscreen"))
	}},
	{"grpc", "", func(r *inspector.Request, v string, rng *rand.Rand) {
		psGRPC(r, "application/grpc", append(psPB(1, []byte("items")), psPB(2, []byte(v))...), rng.IntN(4) == 0)
	}},
	{"grpc-web-nested", "", func(r *inspector.Request, v string, _ *rand.Rand) {
		msg := psPB(2, append(psPB(1, []byte(v)), protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 256)...))
		psGRPC(r, "application/grpc-web+proto", append(psPB(1, []byte("orders")), msg...), false)
	}},
	{"text-body", "", func(r *inspector.Request, v string, _ *rand.Rand) { psBody(r, "text/plain", []byte(v)) }},
}

// psEncoding encodes a payload as attackers do to slip past a WAF.
type psEncoding struct {
	name string
	fn   func(s string, rng *rand.Rand) string
}

func psEach(s string, enc func(c byte) string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			b.WriteByte(c)
			continue
		}
		b.WriteString(enc(c))
	}
	return b.String()
}

var psEncodings = []psEncoding{
	{"raw", func(s string, _ *rand.Rand) string { return s }},
	{"upper", func(s string, _ *rand.Rand) string { return strings.ToUpper(s) }},
	{"mixed-case", func(s string, _ *rand.Rand) string {
		b := []byte(s)
		for i := range b {
			if i%2 == 1 && b[i] >= 'a' && b[i] <= 'z' {
				b[i] -= 'a' - 'A'
			}
		}
		return string(b)
	}},
	{"percent", func(s string, _ *rand.Rand) string {
		return psEach(s, func(c byte) string { return fmt.Sprintf("%%%02x", c) })
	}},
	{"percent-all", func(s string, _ *rand.Rand) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}},
	{"percent-double", func(s string, _ *rand.Rand) string {
		return psEach(s, func(c byte) string { return fmt.Sprintf("%%25%02X", c) })
	}},
	{"percent-u", func(s string, _ *rand.Rand) string {
		return psEach(s, func(c byte) string { return fmt.Sprintf("%%u%04X", c) })
	}},
	{"plus", func(s string, _ *rand.Rand) string { return url.QueryEscape(s) }},
	{"html-named", func(s string, _ *rand.Rand) string {
		return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;", "(", "&lpar;", "/", "&sol;").Replace(s)
	}},
	{"html-numeric", func(s string, rng *rand.Rand) string {
		hex := rng.IntN(2) == 0
		return psEach(s, func(c byte) string {
			if hex {
				return fmt.Sprintf("&#x%x;", c)
			}
			return fmt.Sprintf("&#%d;", c)
		})
	}},
	{"backslash-hex", func(s string, _ *rand.Rand) string {
		return psEach(s, func(c byte) string { return fmt.Sprintf(`\x%02x`, c) })
	}},
	{"backslash-unicode", func(s string, _ *rand.Rand) string {
		return psEach(s, func(c byte) string { return fmt.Sprintf(`\u%04x`, c) })
	}},
	{"backslash-char", func(s string, _ *rand.Rand) string { return psEach(s, func(c byte) string { return `\` + string(c) }) }},
	{"nul", func(s string, rng *rand.Rand) string {
		i := rng.IntN(len(s) + 1)
		return s[:i] + "\x00" + s[i:]
	}},
	{"sql-comments", func(s string, _ *rand.Rand) string { return strings.ReplaceAll(s, " ", "/**/") }},
	{"whitespace", func(s string, _ *rand.Rand) string { return strings.NewReplacer(" ", "\t\n ", "/", "/\v").Replace(s) }},
	{"utf8", func(s string, _ *rand.Rand) string {
		return strings.NewReplacer("<", "\uff1c", "'", "\u2019", " ", "\u00a0").Replace(s)
	}},
}

// psUnescape decodes a query or form value ('+' is a space).
func psUnescape(s string) (string, error) { return url.QueryUnescape(s) }
