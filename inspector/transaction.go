package inspector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshwaf/meshwaf/inspector/internal/views"
)

// MaxMatchData is the number of bytes of matched data kept per match.
const MaxMatchData = 256

// ErrCanceled is returned when ctx ends before the inspection does.
var ErrCanceled = errors.New("inspection canceled")

// Inspect runs the request phases of the named profile (the default one
// when the name is empty or unknown) over req. It uses one Coraza
// transaction, always closed. An error means no verdict could be reached;
// the caller applies its failure policy.
func (rs *RuleSet) Inspect(ctx context.Context, req Request, profile string) (Verdict, error) {
	c := rs.def
	if p, ok := rs.profiles[profile]; ok {
		c = p
	}
	v, err := c.inspect(ctx, &req, false)
	if err == nil && c.canaryDue() {
		v = c.canaryCheck(ctx, &req, v)
	}
	return v, err
}

// inspect drives one transaction: request line and headers, phase 1, the
// body and phase 2, then the verdict; with fullEvaluation set, rule
// pre-selection leaves the transaction alone. ctx is checked between phases (a
// phase itself runs to its end): no body work starts, and no verdict is
// reported, once it is done.
func (c *compiled) inspect(ctx context.Context, req *Request, fullEvaluation bool) (v Verdict, err error) {
	if err := canceled(ctx); err != nil {
		return Verdict{}, err
	}
	tx := c.newTransaction(req)
	tally := c.beginPreselect(tx, fullEvaluation)
	defer func() {
		tx.ProcessLogging()
		c.endPreselect(tx)
		if cerr := tx.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing transaction: %w", cerr)
		}
	}()

	excess, undecoded := c.processHeaders(tx, req)
	it := tx.ProcessRequestHeaders()
	bodyOverLimit := false // a multipart or XML body not given to Coraza (bodyguard.go)
	xmlDecl := false       // an XML declaration in the body (beyond.go)
	if it == nil {
		xmlDecl = c.xmlDeclaration(tx, req.Body)
		if it, bodyOverLimit, err = c.processBody(ctx, tx, req); err != nil {
			return Verdict{}, err
		}
	}
	if err := canceled(ctx); err != nil {
		return Verdict{}, err
	}
	v = c.verdict(tx, it, req, guards{excess, bodyOverLimit, xmlDecl, undecoded})
	v.Preselect = c.preselectStats(tally)
	return v, nil
}

// canceled is ErrCanceled wrapping ctx's error once ctx is done, else nil.
func canceled(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
	}
	return nil
}

func (c *compiled) newTransaction(req *Request) types.Transaction {
	if req.ID != "" {
		return c.waf.NewTransactionWithID(req.ID)
	}
	return c.waf.NewTransaction()
}

// processHeaders gives tx the connection, the request line and the headers
// the header guard lets through (headerguard.go), the Host when the
// headers lack it, and the phase-1 arguments meshwaf adds (beyond.go). It
// returns what the guard held back and the values whose views were skipped.
func (c *compiled) processHeaders(tx types.Transaction, req *Request) (headerExcess, views.Skipped) {
	tx.ProcessConnection(req.Source.Address, req.Source.Port, req.Destination.Address, req.Destination.Port)
	tx.ProcessURI(req.URI, req.Method, req.Protocol)
	excess := headerGuard(req, c.profile.ArgumentsLimit)
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
	undecoded := c.addPhase1Args(tx, req, excess) // beyond.go
	return excess, undecoded
}

// processBody writes the body, unless the body guard finds more parts or
// nodes than the arguments limit (bodyOverLimit), and runs phase 2.
func (c *compiled) processBody(ctx context.Context, tx types.Transaction, req *Request) (it *types.Interruption, bodyOverLimit bool, err error) {
	if err := canceled(ctx); err != nil {
		return nil, false, err
	}
	if len(req.Body) > 0 && tx.IsRequestBodyAccessible() {
		bodyOverLimit = c.bodyNodes(tx, req.Body) > c.profile.ArgumentsLimit
		if !bodyOverLimit {
			if it, _, err = tx.WriteRequestBody(req.Body); err != nil {
				return nil, bodyOverLimit, fmt.Errorf("writing request body: %w", err)
			}
		}
	}
	if it != nil {
		return it, bodyOverLimit, nil
	}
	if err := canceled(ctx); err != nil {
		return nil, bodyOverLimit, err
	}
	if it, err = tx.ProcessRequestBody(); err != nil {
		return nil, bodyOverLimit, fmt.Errorf("processing request body: %w", err)
	}
	return it, bodyOverLimit, nil
}

// verdict reads the outcome of tx: the anomaly score, meshwaf's guard
// findings, the logged rule matches, and the decision from the
// interruption (or the one detection-only mode held back) or a guard.
func (c *compiled) verdict(tx types.Transaction, it *types.Interruption, req *Request, g guards) Verdict {
	p := &c.profile
	v := Verdict{Decision: Allow, Profile: p.Name}
	if state, _ := tx.(plugintypes.TransactionState); state != nil {
		vars := state.Variables()
		v.AnomalyScore = atoi(first(vars.TX().Get(txAnomalyScore)))
		v.UndecodedViews = undecodedViews(vars, g.undecoded)
		v.Matches = c.guardFindings(vars, req, g, v.UndecodedViews)
	}
	guard := 0
	if len(v.Matches) > 0 {
		guard = v.Matches[0].ID
	}
	v.Matches = appendRuleFindings(v.Matches, tx)
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
		return v
	}
	if p.Mode == ModeDetect {
		v.Decision = Detect
	} else {
		v.Decision, v.Status = Deny, p.DenyStatus
	}
	return v
}

// guards is what meshwaf's guards found before the verdict.
type guards struct {
	excess        headerExcess  // headers held back (headerguard.go)
	bodyOverLimit bool          // body not parsed (bodyguard.go)
	xmlDecl       bool          // XML declaration in the body (beyond.go)
	undecoded     views.Skipped // values phase 1's views skipped (beyond.go)
}

// guardFindings are the findings of meshwaf's guards: at most one of rule
// RuleArgumentsLimit (what was held back, or Coraza's arguments limit), one
// of RulePartialBody, one of RuleXMLDeclaration and one of
// RuleUndecodedViews (from u, both phases' skipped values).
func (c *compiled) guardFindings(vars plugintypes.TransactionVariables, req *Request, g guards, u UndecodedViews) []Match {
	excess, bodyOverLimit := g.excess, g.bodyOverLimit
	p := &c.profile
	var out []Match
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
		out = append(out, Match{ID: RuleArgumentsLimit, Severity: "critical",
			Msg:  fmt.Sprintf("More "+what, p.ArgumentsLimit),
			Tags: []string{"meshwaf", "meshwaf/limit"}})
	}
	// Coraza flags a body of exactly the limit as over it; compare
	// lengths instead (the body is written in one call).
	if !p.AllowPartialBody && (req.BodyTruncated || len(req.Body) > p.RequestBodyLimit) {
		out = append(out, Match{ID: RulePartialBody, Severity: "critical",
			Msg:  fmt.Sprintf("Request body only partly inspected (limit %d bytes)", p.RequestBodyLimit),
			Tags: []string{"meshwaf", "meshwaf/limit"}})
	}
	if g.xmlDecl {
		out = append(out, xmlDeclarationFinding())
	}
	if u.Any() && !p.AllowUndecodedViews {
		out = append(out, undecodedViewsFinding(u))
	}
	return out
}

// appendRuleFindings appends to out the logged rules tx matched, with a
// message; nolog rules (CRS setup and flow control) are not findings.
func appendRuleFindings(out []Match, tx types.Transaction) []Match {
	for _, mr := range tx.MatchedRules() {
		r := mr.Rule()
		if r.ID() == 0 || mr.Message() == "" {
			continue
		}
		if l, ok := mr.(interface{ Log() bool }); ok && !l.Log() {
			continue
		}
		out = append(out, Match{
			ID:       r.ID(),
			Msg:      mr.Message(),
			Data:     Truncate(mr.Data(), MaxMatchData),
			Severity: severity(r.Severity()),
			Tags:     r.Tags(),
			Targets:  matchTargets(mr.MatchedDatas()),
		})
	}
	return out
}

// MaxMatchTargets bounds Match.Targets, maxTargetLen each target's bytes.
const (
	MaxMatchTargets = 4
	maxTargetLen    = 256
)

// matchTargets returns the targets of a rule's matches at chain level 0
// (see Match.Targets). The number of matches is bounded by the
// inspected variables (argumentsLimit and the header and cookie limits).
func matchTargets(mds []types.MatchData) []string {
	var out []string
	for _, md := range mds {
		if md.ChainLevel() != 0 {
			continue
		}
		t := sourceTarget(md.Variable().Name(), md.Key()) // beyond.go
		if len(t) > maxTargetLen || !reTarget.MatchString(t) || slices.Contains(out, t) {
			continue
		}
		out = append(out, t)
	}
	// Coraza's order of a collection's keys varies from run to run.
	slices.Sort(out)
	return slices.Clip(out[:min(len(out), MaxMatchTargets)])
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
