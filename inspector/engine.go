// Package inspector runs the OWASP Core Rule Set (embedded, via Coraza v3)
// over one HTTP request at a time and returns a Verdict. It knows nothing
// about Envoy, gRPC or Kubernetes.
package inspector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// CRSVersion is the version of the embedded Core Rule Set.
const CRSVersion = "4.25.0"

// Rule ids of meshwaf's own guards (ModSecurity's local-use id range).
const (
	RuleArgumentsLimit = 99001 // more arguments than SecArgumentsLimit
	RulePartialBody    = 99002 // body cut by the proxy or over the body limit
)

// MaxMatchData is the number of bytes of matched data kept per match.
const MaxMatchData = 256

// RuleSet is an immutable set of compiled profiles. It is safe for
// concurrent use; replace it as a whole (Engine.Swap) to change rules.
type RuleSet struct {
	def      *compiled
	profiles map[string]*compiled
}

type compiled struct {
	profile Profile
	waf     coraza.WAF
	ruleIDs map[int]bool // every rule id loaded (before removals)
	tags    map[string]bool
}

// Profiles returns the names of the profiles in rs, sorted.
func (rs *RuleSet) Profiles() []string {
	names := make([]string, 0, len(rs.profiles))
	for n := range rs.profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Profile returns the settings of the named profile, or the default's.
func (rs *RuleSet) Profile(name string) Profile {
	if c, ok := rs.profiles[name]; ok {
		return c.profile
	}
	return rs.def.profile
}

// Default returns the default profile's settings.
func (rs *RuleSet) Default() Profile { return rs.def.profile }

// ProfileError is a profile that failed validation or compilation. Err
// holds one or more errors (errors.Join); each is a *fielderr.Error with a
// path relative to the profile, or, for SecLang that does not compile,
// Coraza's error.
type ProfileError struct {
	Profile string
	Err     error
}

func (e *ProfileError) Error() string { return fmt.Sprintf("profile %q: %v", e.Profile, e.Err) }
func (e *ProfileError) Unwrap() error { return e.Err }

// Compile validates and compiles def (the default profile) and the named
// extra profiles. Every profile is compiled; the errors of all failing
// profiles are returned together, each a *ProfileError.
func Compile(def Profile, extra ...Profile) (*RuleSet, error) {
	registerOperators() // meshwaf's @rx (rx.go), before any rule is parsed
	all := append([]Profile{def}, extra...)
	for i := range all {
		all[i] = all[i].WithDefaults()
	}
	var errs []error
	seen := make(map[string]bool, len(all))
	for _, p := range all {
		if seen[p.Name] {
			errs = append(errs, &ProfileError{Profile: p.Name, Err: fielderr.Errorf(fielderr.At("name"), "duplicate profile name")})
		}
		seen[p.Name] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	out := make([]*compiled, len(all))
	perr := make([]error, len(all))
	var wg sync.WaitGroup
	for i, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], perr[i] = compile(p)
		}()
	}
	wg.Wait()
	if err := errors.Join(perr...); err != nil {
		for _, c := range out {
			if c != nil {
				_ = c.close() // only releases cached operators
			}
		}
		return nil, err
	}
	rs := &RuleSet{def: out[0], profiles: make(map[string]*compiled, len(out))}
	for _, c := range out {
		rs.profiles[c.profile.Name] = c
	}
	return rs, nil
}

func compile(p Profile) (*compiled, error) {
	if err := p.Validate(); err != nil {
		return nil, &ProfileError{Profile: p.Name, Err: err}
	}
	c := &compiled{profile: p, ruleIDs: map[int]bool{}, tags: map[string]bool{}}
	cfg := coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(Directives(p))
	cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) {
		c.ruleIDs[r.ID()] = true
		for _, t := range r.Tags() {
			c.tags[t] = true
		}
	})
	waf, err := coraza.NewWAF(cfg)
	if err != nil {
		return nil, &ProfileError{Profile: p.Name, Err: fmt.Errorf("compiling rules: %w", err)}
	}
	c.waf = waf
	var errs []error
	for i, e := range p.Exclusions {
		for _, id := range e.RuleIDs {
			if !c.ruleIDs[id] {
				errs = append(errs, fielderr.Errorf(fielderr.At("exclusions").Index(i).Field("ruleIds"), "rule %d does not exist", id))
			}
		}
		for _, t := range e.Tags {
			if !c.tags[t] {
				errs = append(errs, fielderr.Errorf(fielderr.At("exclusions").Index(i).Field("tags"), "no rule has tag %q", t))
			}
		}
	}
	if len(errs) > 0 {
		_ = c.close() // only releases cached operators
		return nil, &ProfileError{Profile: p.Name, Err: errors.Join(errs...)}
	}
	return c, nil
}

// close releases the WAF's share of Coraza's operator cache.
func (c *compiled) close() error {
	if cl, ok := c.waf.(experimental.WAFCloser); ok {
		return cl.Close()
	}
	return nil
}

// Mesh defaults that differ from CRS's: East/West traffic is mostly APIs,
// so PUT, PATCH and DELETE and the API and gRPC content types are normal.
// gRPC bodies are protobuf: the GRPC body processor (grpcbody.go) makes
// their string fields ARGS. A profile's beforeCRS may set these tx
// variables again.
const (
	meshAllowedMethods      = "GET HEAD POST PUT PATCH DELETE OPTIONS"
	meshAllowedContentTypes = "|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json| |application/merge-patch+json| |application/json-patch+json| |application/cloudevents+json| |application/cloudevents-batch+json| |application/grpc| |application/grpc+proto| |application/grpc-web| |application/grpc-web+proto|"
)

// Directives returns the SecLang that Compile loads for p (after defaults).
func Directives(p Profile) string {
	engine := "On"
	if p.Mode == ModeDetect {
		engine = "DetectionOnly"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `SecRuleEngine %s
SecRequestBodyAccess On
SecRequestBodyLimit %d
SecRequestBodyInMemoryLimit %d
SecRequestBodyLimitAction ProcessPartial
SecRequestBodyJsonDepthLimit 1024
SecArgumentsLimit %[4]d
SecResponseBodyAccess Off
SecAuditEngine Off
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:%[5]d,msg:'Failed to parse request body.',logdata:'%%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:%[5]d,msg:'Multipart request body failed strict validation.'"
Include @crs-setup.conf.example
SecAction "id:99100,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%[6]d,setvar:tx.detection_paranoia_level=%[6]d,setvar:tx.meshwaf_request_body_limit=%[2]d"
SecAction "id:99101,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=%[7]d"
SecAction "id:99102,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=%[8]s'"
SecAction "id:99103,phase:1,pass,t:none,nolog,setvar:'tx.allowed_request_content_type=%[9]s'"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/grpc(?:-web)?(?:[+;]|$)" "id:99104,phase:1,pass,nolog,t:none,t:lowercase,ctl:requestBodyProcessor=GRPC"
`, engine, p.RequestBodyLimit, p.RequestBodyLimit, p.ArgumentsLimit, p.DenyStatus, p.ParanoiaLevel, p.InboundAnomalyThreshold,
		meshAllowedMethods, meshAllowedContentTypes)
	b.WriteString(grpcRawRule)
	exBefore, exAfter := exclusionDirectives(p.Exclusions)
	if p.BeforeCRS != "" {
		b.WriteString(p.BeforeCRS)
		b.WriteString("\n")
	}
	b.WriteString(exBefore)
	b.WriteString("Include @owasp_crs/REQUEST-*.conf\n")
	b.WriteString(exAfter)
	if p.AfterCRS != "" {
		b.WriteString(p.AfterCRS)
		b.WriteString("\n")
	}
	return b.String()
}

// Engine inspects requests with the current RuleSet. All methods are safe
// for concurrent use; a check in flight during Swap finishes on the set it
// started with.
type Engine struct {
	set atomic.Pointer[RuleSet]
}

// NewEngine returns an engine serving rs.
func NewEngine(rs *RuleSet) *Engine {
	e := &Engine{}
	e.set.Store(rs)
	return e
}

// Swap replaces the rule set atomically and returns the previous one.
func (e *Engine) Swap(rs *RuleSet) *RuleSet { return e.set.Swap(rs) }

// RuleSet returns the rule set in force.
func (e *Engine) RuleSet() *RuleSet { return e.set.Load() }

// ErrCanceled is returned when ctx ends before the inspection does.
var ErrCanceled = errors.New("inspection canceled")

// Inspect runs the request phases of the named profile (the default one
// when the name is empty or unknown) over req. It uses one Coraza
// transaction, always closed. An error means no verdict could be reached;
// the caller applies its failure policy.
func (e *Engine) Inspect(ctx context.Context, req Request, profile string) (Verdict, error) {
	return e.set.Load().Inspect(ctx, req, profile)
}

// Inspect is Engine.Inspect on this rule set.
func (rs *RuleSet) Inspect(ctx context.Context, req Request, profile string) (Verdict, error) {
	c := rs.def
	if p, ok := rs.profiles[profile]; ok {
		c = p
	}
	return c.inspect(ctx, &req)
}

// Close releases what the rule set's WAFs hold in Coraza's process-wide
// cache of compiled operators (patterns no other rule set uses). Call it
// once rs is replaced: checks still running on rs finish unaffected.
func (rs *RuleSet) Close() error {
	var errs []error
	for _, c := range rs.profiles { // the default profile included
		errs = append(errs, c.close())
	}
	return errors.Join(errs...)
}

// Has reports whether rs has a profile of that name.
func (rs *RuleSet) Has(profile string) bool {
	_, ok := rs.profiles[profile]
	return ok
}

func (c *compiled) inspect(ctx context.Context, req *Request) (v Verdict, err error) {
	if ctx.Err() != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
	}
	p := &c.profile
	var tx types.Transaction
	if req.ID != "" {
		tx = c.waf.NewTransactionWithID(req.ID)
	} else {
		tx = c.waf.NewTransaction()
	}
	defer func() {
		tx.ProcessLogging()
		if cerr := tx.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing transaction: %w", cerr)
		}
	}()

	tx.ProcessConnection(req.Source.Address, req.Source.Port, req.Destination.Address, req.Destination.Port)
	tx.ProcessURI(req.URI, req.Method, req.Protocol)
	excess := headerGuard(req, p.ArgumentsLimit) // headerguard.go
	hasHost := false
	for _, h := range req.Headers {
		if excess == headersOverLimit ||
			excess == cookiesOverLimit && strings.EqualFold(h.Name, "cookie") {
			continue
		}
		if strings.EqualFold(h.Name, "host") {
			hasHost = true
		}
		tx.AddRequestHeader(h.Name, h.Value)
	}
	if req.Host != "" {
		if !hasHost {
			tx.AddRequestHeader("Host", req.Host)
		}
		tx.SetServerName(Hostname(req.Host))
	}

	// ctx is checked between phases (a phase itself runs to its end): no
	// body work starts, and no verdict is reported, once it is done.
	it := tx.ProcessRequestHeaders()
	bodyOverLimit := false // a multipart or XML body not given to Coraza (bodyguard.go)
	if it == nil {
		if ctx.Err() != nil {
			return Verdict{}, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
		}
		if len(req.Body) > 0 && tx.IsRequestBodyAccessible() {
			bodyOverLimit = c.bodyNodes(tx, req.Body) > p.ArgumentsLimit
			if !bodyOverLimit {
				if it, _, err = tx.WriteRequestBody(req.Body); err != nil {
					return Verdict{}, fmt.Errorf("writing request body: %w", err)
				}
			}
		}
		if it == nil {
			if ctx.Err() != nil {
				return Verdict{}, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
			}
			if it, err = tx.ProcessRequestBody(); err != nil {
				return Verdict{}, fmt.Errorf("processing request body: %w", err)
			}
		}
	}
	if ctx.Err() != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
	}

	v = Verdict{Decision: Allow, Profile: p.Name}
	state, _ := tx.(plugintypes.TransactionState)
	if state != nil {
		vars := state.Variables()
		v.AnomalyScore = atoi(first(vars.TX().Get("blocking_inbound_anomaly_score")))
		what := ""
		switch {
		case excess == headersOverLimit: // as for bodies: Coraza would take them all
			what = "request headers than the inspection limit (%d); headers not inspected"
		case excess == cookiesOverLimit:
			what = "cookies than the inspection limit (%d); Cookie headers not inspected"
		case bodyOverLimit: // whatever AllowArgumentsOverLimit says: Coraza would parse it all
			what = "multipart parts or XML nodes than the inspection limit (%d); body not parsed"
		case !p.AllowArgumentsOverLimit && vars.ArgumentsLimitReached().Get() == "1":
			what = "arguments than the inspection limit (%d)"
		}
		if what != "" {
			v.Matches = append(v.Matches, Match{ID: RuleArgumentsLimit, Severity: "critical",
				Msg:  fmt.Sprintf("More "+what, p.ArgumentsLimit),
				Tags: []string{"meshwaf", "meshwaf/limit"}})
		}
		// Coraza flags a body of exactly the limit as over it; compare
		// lengths instead (the body is written in one call).
		if !p.AllowPartialBody && (req.BodyTruncated || len(req.Body) > p.RequestBodyLimit) {
			v.Matches = append(v.Matches, Match{ID: RulePartialBody, Severity: "critical",
				Msg:  fmt.Sprintf("Request body only partly inspected (limit %d bytes)", p.RequestBodyLimit),
				Tags: []string{"meshwaf", "meshwaf/limit"}})
		}
	}
	guard := 0
	if len(v.Matches) > 0 {
		guard = v.Matches[0].ID
	}

	for _, mr := range tx.MatchedRules() {
		r := mr.Rule()
		if r.ID() == 0 || mr.Message() == "" {
			continue
		}
		if l, ok := mr.(interface{ Log() bool }); ok && !l.Log() {
			continue // nolog rules (CRS setup and flow control) are not findings
		}
		v.Matches = append(v.Matches, Match{
			ID:       r.ID(),
			Msg:      mr.Message(),
			Data:     Truncate(mr.Data(), MaxMatchData),
			Severity: severity(r.Severity()),
			Tags:     r.Tags(),
		})
	}
	sort.SliceStable(v.Matches, func(i, j int) bool { return v.Matches[i].ID < v.Matches[j].ID })

	if it == nil {
		if d, ok := tx.(interface{ DetectionOnlyInterruption() *types.Interruption }); ok {
			it = d.DetectionOnlyInterruption()
		}
	}
	switch {
	case it != nil:
		v.InterruptingRule = it.RuleID
	case guard != 0:
		v.InterruptingRule = guard
	default:
		return v, nil
	}
	if p.Mode == ModeDetect {
		v.Decision = Detect
	} else {
		v.Decision, v.Status = Deny, p.DenyStatus
	}
	return v, nil
}

// RuleIDs returns the ids of v's matches, ascending and without repeats.
func (v Verdict) RuleIDs() []int {
	ids := make([]int, len(v.Matches))
	for i, m := range v.Matches {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Truncate cuts s to at most n bytes on a UTF-8 boundary and marks the cut
// with "…".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func severity(s types.RuleSeverity) string {
	if str := s.String(); str != "unknown" {
		return str
	}
	return ""
}
