package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshwaf/meshwaf/inspector"
)

// Placement puts an item's text in one part of a request, as a client
// would send it.
type Placement struct {
	Name string
	// applies says whether the placement is sensible for the item: attack
	// classes are placed as values everywhere (XXE only as an XML body);
	// benign queries, JSON objects and header values only where they come
	// from.
	applies func(Item) bool
	build   func(text string) (inspector.Request, bool)
}

// Placement names.
const (
	PlaceQuery     = "query"
	PlaceForm      = "form"
	PlaceJSON      = "json"
	PlaceJSONKey   = "json-key"
	PlaceCookie    = "cookie"
	PlaceHeader    = "header"
	PlaceXMLText   = "xml-text"
	PlaceXMLAttr   = "xml-attr"
	PlaceXMLBody   = "xml-body"
	PlaceMultipart = "multipart"
	PlaceFilename  = "multipart-filename"
	PlaceGRPC      = "grpc"
)

// valueClasses are the benign classes of free-standing values (text,
// words, unicode strings), placed like attack payloads.
func valueClass(it Item) bool {
	return it.Kind == Benign && (it.Class == "text" || it.Class == "words" || it.Class == "unicode")
}

func attackValue(it Item) bool { return it.Kind == Attack && it.Class != "xxe" }

func valueAnywhere(it Item) bool { return attackValue(it) || valueClass(it) }

// rawOnly keeps encoded attack variants out of a placement: they are
// measured in a query argument, a JSON value and a custom header only,
// which keeps the run to a few minutes.
func rawOnly(f func(Item) bool) func(Item) bool {
	return func(it Item) bool { return it.Encoding == "raw" && f(it) }
}

// fileName is a benign item sensible as a file name: words or a Unicode
// string, sent with ".pdf" appended (not sentences).
func fileName(it Item) bool {
	return it.Kind == Benign && (it.Class == "words" || it.Class == "unicode")
}

// placements returns the placements; grpc adds the gRPC message field.
func placements(grpc bool) []Placement {
	ps := []Placement{
		{PlaceQuery, func(it Item) bool { return valueAnywhere(it) || it.Kind == Benign && it.Class == "query" }, queryReq},
		{PlaceForm, rawOnly(valueAnywhere), formReq},
		{PlaceJSON, func(it Item) bool { return valueAnywhere(it) || it.Kind == Benign && it.Class == "json" }, jsonReq},
		{PlaceJSONKey, rawOnly(attackValue), jsonKeyReq},
		{PlaceCookie, rawOnly(valueAnywhere), cookieReq},
		{PlaceHeader, func(it Item) bool { return valueAnywhere(it) || it.Kind == Benign && it.Class == "header" }, headerReq},
		{PlaceXMLText, rawOnly(valueAnywhere), xmlTextReq},
		{PlaceXMLAttr, rawOnly(valueAnywhere), xmlAttrReq},
		{PlaceXMLBody, func(it Item) bool { return it.Kind == Attack && it.Class == "xxe" }, xmlBodyReq},
		{PlaceMultipart, rawOnly(valueAnywhere), multipartReq},
		{PlaceFilename, rawOnly(func(it Item) bool { return attackValue(it) || fileName(it) }), filenameReq},
	}
	if grpc {
		ps = append(ps, Placement{PlaceGRPC, rawOnly(valueAnywhere), grpcReq})
	}
	return ps
}

// request returns the request for it in p: benign queries and JSON
// objects are whole queries and bodies, benign file names get ".pdf",
// everything else is a value.
func (p Placement) request(it Item) (inspector.Request, bool) {
	switch {
	case it.Kind == Benign && p.Name == PlaceFilename:
		return p.build(it.Text + ".pdf")
	case it.Kind == Benign && it.Class == "query":
		r := base("GET", "/api/v1/search?"+it.Text)
		return r, true
	case it.Kind == Benign && it.Class == "json":
		return withBody(base("POST", "/api/v1/objects"), "application/json", it.Text), true
	}
	return p.build(it.Text)
}

const host = "api.shop.svc.cluster.local"

func base(method, uri string) inspector.Request {
	return inspector.Request{
		ID: "detection", Method: method, URI: uri, Protocol: "HTTP/1.1", Host: host,
		Headers: []inspector.Header{
			{Name: "host", Value: host},
			{Name: "user-agent", Value: "shop-www/1.4.2"},
			{Name: "accept", Value: "application/json"},
		},
		Source:      inspector.Peer{Address: "10.0.0.5", Port: 41000, Principal: "spiffe://cluster.local/ns/shop/sa/www"},
		Destination: inspector.Peer{Address: "10.0.0.9", Port: 8080, Principal: "spiffe://cluster.local/ns/shop/sa/api"},
	}
}

func withBody(r inspector.Request, contentType, body string) inspector.Request {
	r.Headers = append(r.Headers,
		inspector.Header{Name: "content-type", Value: contentType},
		inspector.Header{Name: "content-length", Value: strconv.Itoa(len(body))})
	r.Body = []byte(body)
	return r
}

func queryReq(s string) (inspector.Request, bool) {
	return base("GET", "/api/v1/search?note="+url.QueryEscape(s)+"&page=1"), true
}

func formReq(s string) (inspector.Request, bool) {
	return withBody(base("POST", "/api/v1/notes"), "application/x-www-form-urlencoded", "note="+url.QueryEscape(s)+"&page=1"), true
}

// jsonReq sends s as a string value, or as the value itself when s is a
// JSON object (a NoSQL operator object is sent that way).
func jsonReq(s string) (inspector.Request, bool) {
	v := json.RawMessage(quoteJSON(s))
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") && json.Valid([]byte(t)) {
		v = json.RawMessage(t)
	}
	return withBody(base("POST", "/api/v1/notes"), "application/json", `{"note":`+string(v)+`,"page":1}`), true
}

func jsonKeyReq(s string) (inspector.Request, bool) {
	return withBody(base("POST", "/api/v1/notes"), "application/json", `{"page":1,`+quoteJSON(s)+`:"x"}`), true
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

func cookieReq(s string) (inspector.Request, bool) {
	r := base("GET", "/api/v1/notes")
	r.Headers = append(r.Headers, inspector.Header{Name: "cookie", Value: "session=3f2a9c1b7e; note=" + url.QueryEscape(s)})
	return r, true
}

// headerValue reports whether s can be a header value: no control
// characters (Envoy refuses CR, LF and NUL).
func headerValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7F {
			return false
		}
	}
	return true
}

func headerReq(s string) (inspector.Request, bool) {
	if !headerValue(s) {
		return inspector.Request{}, false
	}
	r := base("GET", "/api/v1/notes")
	r.Headers = append(r.Headers, inspector.Header{Name: "x-user-note", Value: s})
	return r, true
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

// xmlChars reports whether s holds only characters XML 1.0 allows.
func xmlChars(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFD || r == 0xFFFE || r == 0xFFFF {
			return false
		}
	}
	return true
}

func xmlTextReq(s string) (inspector.Request, bool) {
	if !xmlChars(s) {
		return inspector.Request{}, false
	}
	return withBody(base("POST", "/api/v1/notes"), "application/xml",
		`<?xml version="1.0"?><order><note>`+xmlEscaper.Replace(s)+`</note><page>1</page></order>`), true
}

func xmlAttrReq(s string) (inspector.Request, bool) {
	if !xmlChars(s) {
		return inspector.Request{}, false
	}
	return withBody(base("POST", "/api/v1/notes"), "application/xml",
		`<?xml version="1.0"?><order><note lang="`+xmlEscaper.Replace(s)+`">x</note><page>1</page></order>`), true
}

func xmlBodyReq(s string) (inspector.Request, bool) {
	return withBody(base("POST", "/api/v1/notes"), "application/xml", s), true
}

const boundary = "----meshwafdetection5f3a"

func multipartBody(disposition, content string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"page\"\r\n\r\n1\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Disposition: %s\r\n", boundary, disposition)
	if strings.Contains(disposition, "filename=") {
		b.WriteString("Content-Type: text/plain\r\n")
	}
	fmt.Fprintf(&b, "\r\n%s\r\n--%s--\r\n", content, boundary)
	return b.String()
}

func multipartReq(s string) (inspector.Request, bool) {
	if strings.Contains(s, "--"+boundary) {
		return inspector.Request{}, false
	}
	return withBody(base("POST", "/api/v1/notes"), "multipart/form-data; boundary="+boundary,
		multipartBody(`form-data; name="note"`, s)), true
}

// filenameReq quotes " as %22, as browsers do; a name with CR or LF
// cannot be sent.
func filenameReq(s string) (inspector.Request, bool) {
	if strings.ContainsAny(s, "\r\n") {
		return inspector.Request{}, false
	}
	name := strings.ReplaceAll(s, `"`, "%22")
	return withBody(base("POST", "/api/v1/notes"), "multipart/form-data; boundary="+boundary,
		multipartBody(`form-data; name="file"; filename="`+name+`"`, "report")), true
}

// grpcReq is a unary gRPC call whose message has field 1 "orders" and
// field 2 the text.
func grpcReq(s string) (inspector.Request, bool) {
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, "orders")
	msg = protowire.AppendTag(msg, 2, protowire.BytesType)
	msg = protowire.AppendString(msg, s)
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg))) //nolint:gosec // corpus items are small
	frame = append(frame, msg...)
	r := withBody(base("POST", "/notes.v1.Notes/Create"), "application/grpc", string(frame))
	r.Protocol = "HTTP/2"
	r.Headers = append(r.Headers, inspector.Header{Name: "te", Value: "trailers"})
	return r, true
}
