package inspector

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshwaf/meshwaf/inspector/internal/preselect"
	"github.com/meshwaf/meshwaf/inspector/internal/rx"
)

// Rule pre-selection (internal/preselect): before Coraza evaluates a
// request phase, the hook rule that starts it removes from the transaction
// the rules proven unable to match it. This file connects a compiled
// profile to its plan.

// bindPlan builds the plan of c's WAF from the rules Coraza compiled, when
// pre-selection is on for the profile.
func (c *compiled) bindPlan(slot *preselect.Slot, rules []types.RuleMetadata) {
	if !c.profile.preselectOn() {
		return
	}
	c.plan = preselect.NewPlan(rules, slot.Memoizer(), preselect.Options{
		Regexp:     rx.Matcher,
		NewScreen:  rx.NewScreen,
		NewUnion:   rx.NewUnion,
		Root:       coreruleset.FS,
		RootPrefix: "@owasp_crs/",
		Ignore:     ignored(c.profile),
	})
	slot.Bind(c.plan)
	for ph := 1; ph <= 2; ph++ {
		_, n := c.plan.Analysable(ph)
		c.rules += n
	}
}

// preselectOn reports whether rule pre-selection runs for p: not when
// switched off, and not when the profile's own SecLang changes compiled
// rules in ways the rule text Coraza reports does not show: a
// SecRuleUpdateActionById, or a SecRuleUpdateTargetBy* that adds a target
// (one that only removes targets, "!VAR:key", narrows what a rule reads,
// which analysing the rule's own targets covers). Default actions need no
// check: crs-setup defines them for both request phases and Coraza refuses
// a second definition.
func (p Profile) preselectOn() bool {
	if p.Preselect != nil && !*p.Preselect {
		return false
	}
	for _, text := range []string{p.BeforeCRS, p.AfterCRS} {
		for _, line := range strings.Split(text, "\n") {
			if !onlyNarrows(strings.TrimSpace(line)) {
				return false
			}
		}
	}
	return true
}

// onlyNarrows reports whether a SecLang line cannot change what a compiled
// rule reads or does behind the rule observer's back.
func onlyNarrows(line string) bool {
	lower := strings.ToLower(line)
	if !strings.Contains(lower, "secruleupdate") {
		return true
	}
	if !strings.HasPrefix(lower, "secruleupdatetargetby") || strings.HasSuffix(line, "\\") {
		return false
	}
	f := strings.Fields(line)
	if len(f) < 3 {
		return false
	}
	targets := strings.Trim(f[len(f)-1], `"`)
	if len(f) > 3 && strings.HasPrefix(f[len(f)-1], `"`) != strings.HasSuffix(f[len(f)-1], `"`) {
		return false // a quoted list with spaces: not read here
	}
	for _, t := range strings.Split(targets, "|") {
		if !strings.HasPrefix(t, "!") {
			return false
		}
	}
	return true
}

// detectionLevel is the paranoia level of the CRS rules that run for p:
// corroboration runs its selected paranoia-level-2 rules at level 1 (the
// others are removed from the compiled rule set).
func (p Profile) detectionLevel() int {
	if p.CorroborationOn() {
		return max(p.ParanoiaLevel, 2)
	}
	return p.ParanoiaLevel
}

// ignored reports the rules pre-selection need not analyse for p: those
// above its detection paranoia level, and those corroboration removes
// (compiled, so the rule observer reports them, but never evaluated).
// Analysing them would only cost time; an ignored rule is never removed.
func ignored(p Profile) func(types.RuleMetadata) bool {
	above := aboveParanoiaLevel(p.detectionLevel())
	removed := map[int]bool{}
	for _, id := range corroborationRemoved(p) {
		removed[id] = true
	}
	return func(md types.RuleMetadata) bool {
		return removed[md.ID()] || above(md)
	}
}

// aboveParanoiaLevel reports the CRS rules of a paranoia level above pl:
// CRS's own gates skip them, so pre-selection need not look at them (if a
// profile's SecLang raises the level, they run, unanalysed).
func aboveParanoiaLevel(pl int) func(types.RuleMetadata) bool {
	return func(md types.RuleMetadata) bool {
		for _, t := range md.Tags() {
			if n, ok := strings.CutPrefix(t, "paranoia-level/"); ok {
				if l, err := strconv.Atoi(n); err == nil && l > pl {
					return true
				}
			}
		}
		return false
	}
}

func (c *compiled) beginPreselect(tx types.Transaction, fullEvaluation bool) *preselect.Tally {
	if c.plan == nil {
		return nil
	}
	return c.plan.Begin(tx, fullEvaluation)
}

func (c *compiled) endPreselect(tx types.Transaction) {
	if c.plan != nil {
		c.plan.End(tx)
	}
}

func (c *compiled) preselectStats(t *preselect.Tally) PreselectStats {
	if t == nil {
		return PreselectStats{}
	}
	return PreselectStats{Rules: c.rules, Candidates: t.Candidates, Removed: t.Removed}
}

// canaryDue reports whether this check is one of the profile's
// preselectCanary sample.
func (c *compiled) canaryDue() bool {
	n := c.profile.PreselectCanary
	return c.plan != nil && n > 0 && c.canary.Add(1)%uint64(n) == 0
}

// canaryCheck runs req again with every rule and returns that verdict,
// marked with what pre-selection's verdict v disagreed on. When the second
// run cannot finish (ctx ended), v stands.
func (c *compiled) canaryCheck(ctx context.Context, req *Request, v Verdict) Verdict {
	full, err := c.inspect(ctx, req, true)
	if err != nil {
		return v
	}
	full.Preselect = v.Preselect
	full.Preselect.Canary = true
	full.Preselect.Disagreement = disagreement(v, full)
	return full
}

// disagreement returns the ids of the rules that matched in one of a and b
// only, or those of both when anything else differs ([0] when no rule
// differs but the score or status does); nil when they agree on decision,
// status, score, interrupting rule and matches.
func disagreement(a, b Verdict) []int {
	same := a.Decision == b.Decision && a.Status == b.Status && a.AnomalyScore == b.AnomalyScore &&
		a.InterruptingRule == b.InterruptingRule && len(a.Matches) == len(b.Matches)
	for i := 0; same && i < len(a.Matches); i++ {
		same = a.Matches[i].ID == b.Matches[i].ID && a.Matches[i].Msg == b.Matches[i].Msg
	}
	if same {
		return nil
	}
	ia, ib := a.RuleIDs(), b.RuleIDs()
	var out []int
	for _, id := range ia {
		if !slices.Contains(ib, id) {
			out = append(out, id)
		}
	}
	for _, id := range ib {
		if !slices.Contains(ia, id) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		out = slices.Compact(slices.Sorted(slices.Values(append(ia, ib...))))
	}
	if len(out) == 0 {
		out = []int{0}
	}
	return out
}

// PreselectOff returns the names of the profiles rule pre-selection does
// not run for (switched off, or SecLang that changes compiled rules), sorted.
func (rs *RuleSet) PreselectOff() []string {
	var off []string
	for _, name := range rs.Profiles() {
		if rs.profiles[name].plan == nil {
			off = append(off, name)
		}
	}
	return off
}
