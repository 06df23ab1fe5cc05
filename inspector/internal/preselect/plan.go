// Package preselect removes from each Coraza transaction the rules that
// provably cannot match it, before Coraza evaluates a request phase.
// Coraza stays the engine of record: pre-selection never decides a
// verdict and never adds a match. A rule is removed only when, for every
// value Coraza would hand its operator (after the rule's transformations,
// each intermediate value too under multiMatch), the operator does not
// match; a rule that does not match runs no action, so removing it changes
// nothing. Every rule pre-selection cannot analyse exactly is kept: rules
// that read TX, MATCHED_VAR(S) or anything else an earlier rule can change,
// counts, negated operators, operators with macros, transformations or
// operators it does not model, and the rules a skip:N action counts.
//
// The rule facts come from what Coraza compiled (the rule observer's text
// of each rule), so CRS, meshwaf's rules and a profile's own SecLang are
// covered alike.
package preselect

import (
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/corazawaf/coraza/v3/collection"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/corazawaf/coraza/v3/types/variables"
)

// Options are what a plan needs besides the rules.
type Options struct {
	// Regexp returns @rx for pattern exactly as the WAF's rules evaluate it.
	// Nil: @rx rules are kept.
	Regexp func(pattern string, memo plugintypes.Memoizer) (Matcher, error)
	// Root and RootPrefix locate @pmFromFile data: only rules whose file
	// starts with RootPrefix (the embedded rule set) read from Root.
	Root       fs.FS
	RootPrefix string
	// Ignore names rules not worth analysing (kept, so sound whatever it
	// says): e.g. rules that a paranoia-level gate skips anyway.
	Ignore func(types.RuleMetadata) bool
	// NewUnion returns, for matchers Regexp returned, a test that answers
	// from a Screen whether any of them may match; nil: ask each.
	NewUnion func([]Matcher) Union
	// NewScreen returns a Screen for the ScreenedMatchers Regexp returns;
	// nil, or a nil Screen: every matcher is asked through Match.
	NewScreen func() Screen
}

// Plan is the analysis of one compiled WAF's rules. It is immutable and
// safe for concurrent use.
type Plan struct {
	rules   [3][]*rule // analysable rules by phase (1, 2)
	total   [3]int     // rules with an id per phase
	sources []source
	// bySource lists, per source, the rules of each phase reading it.
	bySource [3][][]*rule
	nodes    []node // the transformation trie; node 0 is the value itself
	kept     map[int]string
	tallies  sync.Map // transaction -> *Tally
	scratch  sync.Pool
	opts     Options
	phrases  *phraseIndex // nil: no @pm rule
	groups   []group
}

// source is one variable with its key: what a rule's target names.
type source struct {
	v     variables.RuleVariable
	key   string
	keyRx bool
}

// node is one transformation applied to its parent's output.
type node struct {
	parent int
	name   string
	fn     transform
}

type rule struct {
	idx     int // in its phase
	id      int
	sources []int
	node    int
	path    []int // multiMatch: every node from the value to node
	m       Matcher
	sm      ScreenedMatcher // m, when it can use a screen
	pm      int             // id in the phrase index, -1: none
	group   int             // in Plan.groups, -1: none
}

// modelledVars are the variables whose values are fixed before the
// phase's first rule runs and that no rule action changes.
var modelledVars = map[variables.RuleVariable]bool{
	variables.Args: true, variables.ArgsNames: true, variables.ArgsGet: true, variables.ArgsGetNames: true,
	variables.ArgsPost: true, variables.ArgsPostNames: true, variables.ArgsPath: true,
	variables.RequestCookies: true, variables.RequestCookiesNames: true,
	variables.RequestHeaders: true, variables.RequestHeadersNames: true,
	variables.RequestURI: true, variables.RequestURIRaw: true, variables.RequestFilename: true,
	variables.RequestBasename: true, variables.RequestLine: true, variables.RequestMethod: true,
	variables.RequestProtocol: true, variables.QueryString: true, variables.RequestBody: true,
	variables.XML: true, variables.Files: true, variables.FilesNames: true,
	variables.MultipartPartHeaders: true,
}

// NewPlan analyses rules, in the order Coraza loaded them.
func NewPlan(rules []types.RuleMetadata, memo plugintypes.Memoizer, opts Options) *Plan {
	p := &Plan{nodes: []node{{parent: -1}}, kept: map[int]string{}, opts: opts}
	b := &builder{opts: opts, memo: memo, plan: p, srcIdx: map[source]int{}, nodeIdx: map[string]int{}}
	protected := skipWindows(rules)
	for _, md := range rules {
		ph := int(md.Phase())
		if md.ID() == 0 {
			continue
		}
		if ph >= 1 && ph <= 2 {
			p.total[ph]++
		}
		if opts.Ignore != nil && opts.Ignore(md) {
			p.kept[md.ID()] = "ignored"
			continue
		}
		if protected[md.ID()] {
			p.kept[md.ID()] = "counted by a skip action"
			continue
		}
		r, err := b.analyse(md)
		if err != nil {
			p.kept[md.ID()] = err.Error()
			continue
		}
		r.idx = len(p.rules[ph])
		r.sm, _ = r.m.(ScreenedMatcher)
		r.pm, r.group = -1, -1
		if x, ok := r.m.(*pm); ok {
			r.pm = x.id
		}
		p.rules[ph] = append(p.rules[ph], r)
	}
	p.phrases = newPhraseIndex(b.pms)
	for ph := 1; ph <= 2; ph++ {
		p.bySource[ph] = make([][]*rule, len(p.sources))
		for _, r := range p.rules[ph] {
			for _, s := range r.sources {
				p.bySource[ph][s] = append(p.bySource[ph][s], r)
			}
		}
	}
	p.buildGroups()
	return p
}

// Kept returns why each rule with an id that pre-selection never removes
// is kept.
func (p *Plan) Kept() map[int]string { return p.kept }

// Analysable returns the number of rules of phase that pre-selection may
// remove, and the number of rules of that phase.
func (p *Plan) Analysable(phase int) (analysable, total int) {
	if phase < 1 || phase > 2 {
		return 0, 0
	}
	return len(p.rules[phase]), p.total[phase]
}

// skipWindows returns the rules that a skip:N action of an earlier rule
// counts: removing one would make the action skip another rule.
func skipWindows(rules []types.RuleMetadata) map[int]bool {
	out := map[int]bool{}
	for i, md := range rules {
		if !strings.Contains(strings.ToLower(md.Raw()), "skip:") {
			continue
		}
		n := 0
		if r, err := parseSecRule(md.Raw()); err == nil {
			n = r.skip
		} else {
			n = len(rules) // unreadable: protect everything after it
		}
		for j := i + 1; j < len(rules) && n > 0; j++ {
			if ph := rules[j].Phase(); ph == md.Phase() || ph == 0 {
				out[rules[j].ID()] = true
				n--
			}
		}
	}
	return out
}

type builder struct {
	opts    Options
	memo    plugintypes.Memoizer
	plan    *Plan
	srcIdx  map[source]int
	nodeIdx map[string]int
	pms     []*pm
}

func (b *builder) analyse(md types.RuleMetadata) (*rule, error) {
	ph := int(md.Phase())
	if ph != 1 && ph != 2 {
		return nil, fmt.Errorf("phase %d", ph)
	}
	raw := md.Raw()
	if !strings.HasPrefix(raw, "SecRule") {
		return nil, fmt.Errorf("not a SecRule")
	}
	sr, err := parseSecRule(raw)
	if err != nil {
		return nil, err
	}
	if sr.negated {
		return nil, fmt.Errorf("negated operator")
	}
	r := &rule{id: md.ID()}
	for _, v := range sr.vars {
		if v.exclude {
			continue // exclusions narrow: the superset is analysed
		}
		if v.count {
			return nil, fmt.Errorf("count of %s", v.name)
		}
		rv, err := variables.Parse(v.name)
		if err != nil || !modelledVars[rv] {
			return nil, fmt.Errorf("variable %s", v.name)
		}
		r.sources = append(r.sources, b.source(source{v: rv, key: v.key, keyRx: v.keyRx}))
	}
	if len(r.sources) == 0 {
		return nil, fmt.Errorf("no variables")
	}
	r.path = []int{0}
	for _, t := range sr.trans {
		fn, ok := transforms[strings.ToLower(t)]
		if !ok {
			return nil, fmt.Errorf("transformation %s", t)
		}
		r.node = b.node(r.node, strings.ToLower(t), fn)
		r.path = append(r.path, r.node)
	}
	if !sr.multiMatch {
		r.path = r.path[len(r.path)-1:]
	}
	if r.m, err = b.newMatcher(sr.op, sr.opArg, md.File()); err != nil {
		return nil, err
	}
	return r, nil
}

func (b *builder) source(s source) int {
	if s.keyRx {
		s.key = "" // any key: the whole collection is a superset
		s.keyRx = false
	}
	if i, ok := b.srcIdx[s]; ok {
		return i
	}
	b.plan.sources = append(b.plan.sources, s)
	b.srcIdx[s] = len(b.plan.sources) - 1
	return len(b.plan.sources) - 1
}

func (b *builder) node(parent int, name string, fn transform) int {
	k := fmt.Sprintf("%d/%s", parent, name)
	if i, ok := b.nodeIdx[k]; ok {
		return i
	}
	b.plan.nodes = append(b.plan.nodes, node{parent: parent, name: name, fn: fn})
	b.nodeIdx[k] = len(b.plan.nodes) - 1
	return len(b.plan.nodes) - 1
}

// Union is NewUnion's test (an alias, like Screen).
type Union = interface {
	MayAny(s interface{ Reset(string) }) (may, known bool)
}

// group is @rx rules reading one source through one transformation chain:
// when its union says no literal any of them needs occurs in a value, none
// of them is asked about that value.
type group struct {
	node  int
	union Union
}

// buildGroups gives the screened, single-node rules of each source and
// phase that share a chain a group.
func (p *Plan) buildGroups() {
	if p.opts.NewUnion == nil {
		return
	}
	for ph := 1; ph <= 2; ph++ {
		for _, rules := range p.bySource[ph] {
			byNode := map[int][]*rule{}
			var order []int
			for _, r := range rules {
				if r.sm == nil || len(r.path) != 1 || r.group >= 0 {
					continue
				}
				if _, ok := byNode[r.node]; !ok {
					order = append(order, r.node)
				}
				byNode[r.node] = append(byNode[r.node], r)
			}
			for _, n := range order {
				rs := byNode[n]
				if len(rs) < 2 {
					continue
				}
				ms := make([]Matcher, len(rs))
				for i, r := range rs {
					ms[i] = r.m
				}
				u := p.opts.NewUnion(ms)
				if u == nil {
					continue
				}
				for _, r := range rs {
					r.group = len(p.groups)
				}
				p.groups = append(p.groups, group{node: n, union: u})
			}
		}
	}
}

// Tally counts what pre-selection did for one transaction.
type Tally struct {
	Candidates int // analysable rules looked at
	Removed    int // rules removed from the transaction
	Off        bool
}

// Begin registers tx (the Coraza transaction) so that its counts are kept
// in the returned tally; with off set pre-selection leaves tx alone (full
// evaluation). Call End when tx is done.
func (p *Plan) Begin(tx any, off bool) *Tally {
	t := &Tally{Off: off}
	p.tallies.Store(tx, t)
	return t
}

// End forgets tx.
func (p *Plan) End(tx any) { p.tallies.Delete(tx) }

// transaction is what pre-selection needs of Coraza's transaction: the
// collections rules read (what Coraza's GetField reads) and removal.
type transaction interface {
	Collection(variables.RuleVariable) collection.Collection
	RemoveRuleByID(id int)
}

// Supported reports whether tx offers what pre-selection needs; when it
// does not (a Coraza upgrade changed it), Select does nothing.
func Supported(tx any) bool {
	_, ok := tx.(transaction)
	return ok
}

// Select removes from tx the rules of phase that cannot match it.
func (p *Plan) Select(tx plugintypes.TransactionState, phase int) {
	if phase < 1 || phase > 2 || len(p.rules[phase]) == 0 {
		return
	}
	var tally *Tally
	if t, ok := p.tallies.Load(tx); ok {
		tally = t.(*Tally)
		if tally.Off {
			return
		}
	}
	txn, ok := tx.(transaction)
	if !ok {
		return
	}
	sc := p.getScratch(len(p.rules[phase]))
	defer p.scratch.Put(sc)
	keep := sc.keep
	for si, rules := range p.bySource[phase] {
		undecided := 0
		for _, r := range rules {
			if !keep[r.idx] {
				undecided++
			}
		}
		if undecided == 0 {
			continue
		}
		for _, md := range p.values(txn, si) {
			if sc.gen++; sc.gen == 0 { // wrapped: no stale entry may look current
				clear(sc.out)
				clear(sc.groupGen)
				sc.gen = 1
			}
			sc.out[0] = nodeOut{gen: sc.gen, s: md.Value(), ok: true}
			for _, r := range rules {
				if keep[r.idx] {
					continue
				}
				if r.group >= 0 && !p.groupMay(r.group, sc) {
					continue // no literal any rule of its group needs is in the value
				}
				if p.mayMatch(r, sc) {
					keep[r.idx] = true
					undecided--
				}
			}
			if undecided == 0 {
				break
			}
		}
	}
	removed := 0
	for _, r := range p.rules[phase] {
		if !keep[r.idx] {
			txn.RemoveRuleByID(r.id)
			removed++
		}
	}
	if tally != nil {
		tally.Candidates += len(p.rules[phase])
		tally.Removed += removed
	}
}

// scratch is one Select's working memory, reused across transactions.
type scratch struct {
	groupGen []uint32 // per group: the value its answer is for
	groupMay []bool
	phrases  [][]uint64 // per node: phrase lists occurring (phraseIndex)
	keep     []bool
	out      []nodeOut
	screens  []Screen // per node; nil entries: no screen
	gen      uint32
}

func (p *Plan) getScratch(rules int) *scratch {
	sc, _ := p.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{out: make([]nodeOut, len(p.nodes)), screens: make([]Screen, len(p.nodes)),
			phrases:  make([][]uint64, len(p.nodes)),
			groupGen: make([]uint32, len(p.groups)), groupMay: make([]bool, len(p.groups))}
		if p.phrases != nil {
			for i := range sc.phrases {
				sc.phrases[i] = make([]uint64, p.phrases.words)
			}
		}
		if p.opts.NewScreen != nil {
			for i := range sc.screens {
				sc.screens[i] = p.opts.NewScreen()
			}
		}
	}
	if cap(sc.keep) < rules {
		sc.keep = make([]bool, rules)
	}
	sc.keep = sc.keep[:rules]
	clear(sc.keep)
	return sc
}

type nodeOut struct {
	gen      uint32
	s        string
	ok       bool
	screen   int // the node whose screen holds s
	screened bool
	phrased  bool                 // sc.phrases[screen] is set for s
	injected [libinjections]uint8 // libinjection answers for s: 0 not asked, 1 no, 2 yes
}

// mayMatch reports whether r's operator may match the value in sc.out[0]
// after r's transformations: true unless proven false.
func (p *Plan) mayMatch(r *rule, sc *scratch) bool {
	for _, n := range r.path {
		o := p.output(n, sc)
		if !o.ok {
			return true
		}
		if r.pm >= 0 {
			if set := p.phraseSet(n, sc); set[r.pm>>6]&(1<<(r.pm&63)) != 0 {
				return true
			}
			continue
		}
		if l, ok := r.m.(libinjection); ok {
			h := &sc.out[o.screen]
			if h.injected[l] == 0 {
				h.injected[l] = 1
				if l.Match(h.s) {
					h.injected[l] = 2
				}
			}
			if h.injected[l] == 2 {
				return true
			}
			continue
		}
		if r.sm != nil {
			if s := p.screen(n, sc); s != nil {
				if r.sm.MatchScreened(o.s, s) {
					return true
				}
				continue
			}
		}
		if r.m.Match(o.s) {
			return true
		}
	}
	return false
}

func (p *Plan) output(n int, sc *scratch) *nodeOut {
	o := &sc.out[n]
	if o.gen == sc.gen {
		return o
	}
	nd := &p.nodes[n]
	in := p.output(nd.parent, sc)
	*o = nodeOut{gen: sc.gen, screen: n}
	if in.ok {
		o.s, o.ok = nd.fn(in.s)
		if o.ok && o.s == in.s {
			o.screen = in.screen // same string: share the screen
		}
	}
	return o
}

// groupMay reports whether a rule of group g may match the current value
// (true when the union cannot say).
func (p *Plan) groupMay(g int, sc *scratch) bool {
	if sc.groupGen[g] == sc.gen {
		return sc.groupMay[g]
	}
	may := true
	n := p.groups[g].node
	if o := p.output(n, sc); o.ok {
		if s := p.screen(n, sc); s != nil {
			if m, known := p.groups[g].union.MayAny(s); known {
				may = m
			}
		}
	}
	sc.groupGen[g], sc.groupMay[g] = sc.gen, may
	return may
}

// phraseSet returns which phrase lists occur in node n's output.
func (p *Plan) phraseSet(n int, sc *scratch) []uint64 {
	i := sc.out[n].screen
	h := &sc.out[i]
	if !h.phrased {
		p.phrases.scan(h.s, sc.phrases[i])
		h.phrased = true
	}
	return sc.phrases[i]
}

// screen returns the screen of node n's output, reset to it on first use.
func (p *Plan) screen(n int, sc *scratch) Screen {
	h := &sc.out[sc.out[n].screen]
	s := sc.screens[sc.out[n].screen]
	if s != nil && !h.screened {
		s.Reset(h.s)
		h.screened = true
	}
	return s
}

// values returns the values of source si in tx, as Coraza's GetField
// selects them before exceptions.
func (p *Plan) values(tx transaction, si int) []types.MatchData {
	s := p.sources[si]
	col := tx.Collection(s.v)
	if col == nil {
		return nil
	}
	if s.key != "" {
		if k, ok := col.(collection.Keyed); ok {
			return k.FindString(s.key)
		}
		return nil
	}
	return col.FindAll()
}
