package inspector

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshwaf/meshwaf/inspector/internal/views"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Inspection beyond CRS (issue 13), each on by default and off in
// Profile.CRSOnly:
//   - decoded views: base64, double URL, %uXXXX, full-width and HTML-entity
//     encoded values of arguments, cookies and headers-as-arguments get
//     their decoded text as extra arguments (internal/views);
//   - headers as arguments: values of request headers that carry caller
//     data become ARGS "header:<name>";
//   - XML attribute values and multipart file names become arguments;
//   - XML DOCTYPE/ENTITY declarations in a body are denied (rule 99003).
//
// Everything is added to the transaction before rule pre-selection's hooks
// run: phase 1's in processHeaders (ARGS_GET, before ProcessRequestHeaders),
// phase 2's by the views operator's rule, the first of phase 2.

// RuleXMLDeclaration is meshwaf's guard that denies a request body with an
// XML DOCTYPE or ENTITY declaration (XXE), unless allowXMLDeclarations.
const RuleXMLDeclaration = 99003

// RuleUndecodedViews is meshwaf's guard that denies a request with an
// encoded value the decoded views left undecoded because of a bound (a
// value over views.MaxValue that a decoding applies to, a view past a
// phase's views.Budget, or a view at views.MaxDepth that would still
// decode), unless allowUndecodedViews.
const RuleUndecodedViews = 99004

// Argument-name prefixes of what meshwaf adds in phase 1.
const (
	HeaderArgPrefix = "header:" // a request header inspected as an argument
	CookieArgPrefix = "cookie:" // names the decoded views of a cookie
)

// HeadersAsArgs says which request headers are inspected as arguments
// ("header:<lowercased name>"). Default: every header but those
// DefaultHeadersNotArgs lists. Entries are header names, case-insensitive,
// or prefixes ending in "*".
type HeadersAsArgs struct {
	// Enabled turns the feature off when false (default on).
	Enabled *bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	// Include adds headers that DefaultHeadersNotArgs leaves out.
	Include []string `yaml:"include,omitempty" json:"include,omitempty"`
	// Exclude leaves out more headers; it wins over Include.
	Exclude []string `yaml:"exclude,omitempty" json:"exclude,omitempty"`
}

// DefaultHeadersNotArgs returns the headers not inspected as arguments by
// default (a fresh copy): those Envoy, Istio, tracing and the transport
// set, and the standard ones whose values CRS inspects itself or that carry
// no caller data (credentials included: decoding them would only add false
// positives).
func DefaultHeadersNotArgs() []string { return slices.Clone(defaultHeadersNotArgs) }

var defaultHeadersNotArgs = []string{
	":*", "host", "user-agent", "referer", "cookie", "authorization", "proxy-authorization",
	"accept", "accept-*", "content-type", "content-length", "content-encoding", "transfer-encoding",
	"connection", "keep-alive", "te", "upgrade", "expect", "cache-control", "pragma", "if-*", "range",
	"origin", "date", "dnt", "priority", "upgrade-insecure-requests", "sec-*", "via", "forwarded",
	"x-envoy-*", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host",
	"x-forwarded-client-cert", "x-real-ip", "x-request-id", "x-istio-*",
	"traceparent", "tracestate", "baggage", "b3", "x-b3-*", "x-ot-span-context", "uber-trace-id",
	"x-cloud-trace-context", "x-amzn-trace-id", "x-datadog-*", "sw8*", "grpc-*",
}

// CRSOnly returns p with every inspection beyond CRS off, meshwaf's rule
// pack and corroboration (corroborate.go) included: verdicts are then stock CRS's (the "crs-plN" comparisons;
// the differential test keeps the pack, which stock Coraza loads too).
func (p Profile) CRSOnly() Profile {
	off := false
	p.RulePack = &off
	p.Corroboration = &off
	p.DecodedViews = &off
	p.HeadersAsArgs = HeadersAsArgs{Enabled: &off}
	p.XMLAttributes = &off
	p.FileNames = &off
	p.AllowXMLDeclarations = true
	return p
}

func on(b *bool) bool { return b == nil || *b }

// bodyArgs is what the phase-2 views operator adds for p.
func (p Profile) bodyArgs() views.Options {
	return views.Options{Views: on(p.DecodedViews), XMLAttributes: on(p.XMLAttributes), FileNames: on(p.FileNames)}
}

// headerAsArg reports whether the header name (lowercased) is inspected
// as an argument under h.
func (h HeadersAsArgs) headerAsArg(name string) bool {
	if !on(h.Enabled) || name == "" {
		return false
	}
	return !matchesAny(h.Exclude, name) && (matchesAny(h.Include, name) || !matchesAny(defaultHeadersNotArgs, name))
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if len(name) >= len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
				return true
			}
		} else if strings.EqualFold(p, name) {
			return true
		}
	}
	return false
}

// validate reports entries that are not header names (HTTP tokens, a
// leading ':' allowed) or prefixes of them, and entries in both lists.
func (h HeadersAsArgs) validate() error {
	var errs []error
	for _, l := range []struct {
		field   string
		entries []string
	}{{"include", h.Include}, {"exclude", h.Exclude}} {
		for i, e := range l.entries {
			at := fielderr.At("headersAsArgs").Field(l.field).Index(i)
			if !headerPattern(e) {
				errs = append(errs, fielderr.Errorf(at, "%q is not a header name or a prefix ending in '*'", e))
			} else if l.field == "include" && matchesExact(h.Exclude, e) {
				errs = append(errs, fielderr.Errorf(at, "%q is also excluded", e))
			}
		}
	}
	return errors.Join(errs...)
}

func matchesExact(list []string, e string) bool {
	for _, x := range list {
		if strings.EqualFold(x, e) {
			return true
		}
	}
	return false
}

func headerPattern(s string) bool {
	s = strings.TrimSuffix(strings.TrimPrefix(s, ":"), "*")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}*", c) >= 0 {
			return false
		}
	}
	return true
}

// addPhase1Args adds, before phase 1, the headers inspected as arguments
// and the decoded views of the query arguments, cookies and those headers
// (cookies and headers as sent: views.RawViews) to ARGS_GET (within
// SecArgumentsLimit, like every argument), and returns
// the values the decoder skipped. Headers the header guard held back get
// neither.
func (c *compiled) addPhase1Args(tx types.Transaction, req *Request, excess headerExcess) views.Skipped {
	p := &c.profile
	var headers []Header // inspected as arguments, names lowercased
	if excess != headersOverLimit {
		for _, h := range req.Headers {
			if name := strings.ToLower(h.Name); p.HeadersAsArgs.headerAsArg(name) {
				headers = append(headers, Header{Name: HeaderArgPrefix + name, Value: h.Value})
			}
		}
	}
	var vs []views.View
	var skipped views.Skipped
	if state, ok := tx.(plugintypes.TransactionState); ok && on(p.DecodedViews) {
		d := views.NewDecoder(views.Budget)
		vars := state.Variables()
		for _, md := range vars.ArgsGet().FindAll() {
			vs = d.Views(vs, md.Key(), md.Value())
		}
		for _, md := range vars.RequestCookies().FindAll() {
			vs = d.RawViews(vs, CookieArgPrefix+md.Key(), md.Value())
		}
		for _, h := range headers {
			vs = d.RawViews(vs, h.Name, h.Value)
		}
		skipped = d.Skipped()
	}
	for _, h := range headers {
		tx.AddGetRequestArgument(h.Name, h.Value)
	}
	for _, v := range vs {
		tx.AddGetRequestArgument(v.Name, v.Value)
	}
	return skipped
}

// xmlDeclaration reports a body meshwaf denies with RuleXMLDeclaration: one
// read by the XML body processor, or starting with '<' whatever its type,
// with "<!DOCTYPE" or "<!ENTITY" (any case) in its inspected prefix.
func (c *compiled) xmlDeclaration(tx types.Transaction, body []byte) bool {
	if c.profile.AllowXMLDeclarations || len(body) == 0 {
		return false
	}
	body = body[:min(len(body), c.profile.RequestBodyLimit)]
	xml := bytes.HasPrefix(bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n"), []byte("<"))
	if state, ok := tx.(plugintypes.TransactionState); ok && !xml {
		xml = strings.EqualFold(state.Variables().RequestBodyProcessor().Get(), "XML")
	}
	return xml && hasDeclaration(body)
}

// hasDeclaration reports "<!" followed by DOCTYPE or ENTITY, any case.
func hasDeclaration(b []byte) bool {
	for {
		i := bytes.Index(b, []byte("<!"))
		if i < 0 {
			return false
		}
		b = b[i+2:]
		for _, kw := range []string{"doctype", "entity"} {
			if len(b) >= len(kw) && strings.EqualFold(string(b[:len(kw)]), kw) {
				return true
			}
		}
	}
}

// undecodedViews returns what the decoder skipped in both phases of tx,
// given phase 1's.
func undecodedViews(vars plugintypes.TransactionVariables, phase1 views.Skipped) UndecodedViews {
	sk := phase1.Add(views.BodySkipped(vars))
	return UndecodedViews{OverValueLimit: sk.OverMaxValue, Longest: sk.Longest, OverBudget: sk.OverBudget, BudgetViewBytes: sk.BudgetViewBytes,
		OverDepth: sk.OverDepth}
}

// undecodedViewsFinding is RuleUndecodedViews's finding for u (not zero):
// which bound left which values undecoded.
func undecodedViewsFinding(u UndecodedViews) Match {
	var what []string
	if u.OverValueLimit > 0 {
		what = append(what, fmt.Sprintf("%d encoded value(s) longer than the %d bytes decoded (longest %d bytes)", u.OverValueLimit, views.MaxValue, u.Longest))
	}
	if u.OverBudget > 0 {
		what = append(what, fmt.Sprintf("%d encoded value(s) past the %d bytes of decoded views a request phase adds (%d bytes of views left out)", u.OverBudget, views.Budget, u.BudgetViewBytes))
	}
	if u.OverDepth > 0 {
		what = append(what, fmt.Sprintf("%d value(s) still encoded after the %d nested decodings made", u.OverDepth, views.MaxDepth))
	}
	return Match{ID: RuleUndecodedViews, Severity: "critical",
		Msg:  "Encoded values not inspected decoded: " + strings.Join(what, "; ") + "; a profile may set allowUndecodedViews",
		Tags: []string{"meshwaf", "meshwaf/limit", "meshwaf/views"}}
}

func xmlDeclarationFinding() Match {
	return Match{ID: RuleXMLDeclaration, Severity: "critical",
		Msg:  fmt.Sprintf("XML DOCTYPE or ENTITY declaration in the request body (XXE); a profile may set %s", "allowXMLDeclarations"),
		Tags: []string{"meshwaf", "meshwaf/xml", "attack-xxe"}}
}

// beyondAfterCRS is the SecLang loaded after CRS for p's inspection beyond
// CRS: CRS rule 933100 (PHP open tag) deliberately does not match an
// HTML-escaped "&lt;?" (its test 933100-33), which is escaped text, so
// HTML-entity views are not among its targets.
func beyondAfterCRS(p Profile) string {
	if !on(p.DecodedViews) {
		return ""
	}
	return "SecRuleUpdateTargetById 933100 \"!ARGS:/:" + views.HTML + "$/\"\n"
}

// sourceTarget is the exclusion target ("VAR" or "VAR:key") of a match in
// variable v at key k, with the arguments meshwaf adds named by what they
// derive from: a view "ARGS:q:b64" as "ARGS:q", a header argument (or its
// view) as "REQUEST_HEADERS:<name>", a cookie's view as
// "REQUEST_COOKIES:<name>". Excluding that target also excludes what
// derives from it (exclusion.go, withViewTargets).
func sourceTarget(v, k string) string {
	if k == "" {
		return v
	}
	if v == "ARGS" || v == "ARGS_GET" || v == "ARGS_POST" {
		for range views.MaxDepth {
			i := strings.LastIndexByte(k, ':')
			if i < 0 || !isViewSuffix(k[i+1:]) {
				break
			}
			k = k[:i]
		}
		if h, ok := strings.CutPrefix(k, HeaderArgPrefix); ok {
			return "REQUEST_HEADERS:" + h
		}
		if c, ok := strings.CutPrefix(k, CookieArgPrefix); ok {
			return "REQUEST_COOKIES:" + c
		}
	}
	return v + ":" + k
}

func isViewSuffix(s string) bool {
	switch s {
	case views.Base64, views.URL, views.Uni, views.NFKC, views.HTML:
		return true
	}
	return false
}
