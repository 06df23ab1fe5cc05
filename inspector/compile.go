// Package inspector runs the OWASP Core Rule Set (embedded, via Coraza v3)
// over one HTTP request at a time and returns a Verdict. It knows nothing
// about Envoy, gRPC or Kubernetes.
//
// compile.go builds a RuleSet from profiles, directives.go writes the
// SecLang it loads, transaction.go drives one request through it.
package inspector

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshwaf/meshwaf/inspector/internal/distinctkeys"
	"github.com/meshwaf/meshwaf/inspector/internal/preselect"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// CRSVersion is the version of the embedded Core Rule Set.
const CRSVersion = "4.25.0"

// RuleSet is an immutable set of compiled profiles. It is safe for
// concurrent use. To change rules, compile a new RuleSet and replace the
// old one as a whole (the server holds it behind an atomic pointer); checks
// in flight finish on the set they started with.
type RuleSet struct {
	def      *compiled
	profiles map[string]*compiled
}

type compiled struct {
	profile Profile
	waf     coraza.WAF
	ruleIDs map[int]bool // every rule id loaded (before removals)
	tags    map[string]bool
	plan    *preselect.Plan // nil: rule pre-selection off for this profile
	canary  atomic.Uint64   // checks seen, for PreselectCanary sampling
	rules   int             // rules of phases 1 and 2 (with an id)
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
	registerPlugins() // before any rule is parsed (plugins.go)
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
	slot := preselect.NewSlot()
	defer slot.Release()
	var observed []types.RuleMetadata
	cfg := coraza.NewWAFConfig().WithRootFS(coreruleset.FS).
		WithDirectives(directives(p, distinctkeys.Directives(ruleDistinctKeysPhase1, ruleDistinctKeysPhase2)+
			slot.Directives(rulePreselectPhase1, rulePreselectPhase2)))
	cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) {
		observed = append(observed, r)
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
	c.bindPlan(slot, observed)
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
