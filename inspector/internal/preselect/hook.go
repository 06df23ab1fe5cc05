package preselect

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// hookOperator is the operator of the two rules that start phases 1 and 2:
// it runs pre-selection for its phase and never matches.
const hookOperator = "meshwafPreselect"

var (
	registerOnce sync.Once
	// slots connects the hook rules being parsed to their Slot; an entry
	// lives from NewSlot until Release (the end of that WAF's compile).
	slots   sync.Map // key string -> *Slot
	lastKey atomic.Uint64
)

// Register installs the hook operator in Coraza's registry (process-wide,
// idempotent). Call it before compiling a WAF with a Slot's directives.
func Register() {
	registerOnce.Do(func() { plugins.RegisterOperator(hookOperator, newHook) })
}

// Slot connects one WAF's hook rules to the plan built from that WAF's
// rules once it has compiled.
type Slot struct {
	key  string
	plan atomic.Pointer[Plan]
	memo atomic.Value // plugintypes.Memoizer of the WAF, seen by the hook's parse
}

// NewSlot returns a slot for one WAF compile; Release it when the compile
// is done.
func NewSlot() *Slot {
	s := &Slot{key: strconv.FormatUint(lastKey.Add(1), 10)}
	slots.Store(s.key, s)
	return s
}

// Release ends the compile: the hook rules already hold the slot.
func (s *Slot) Release() { slots.Delete(s.key) }

// Directives returns the two hook rules, with the ids given; they must come
// before every other rule of their phase.
func (s *Slot) Directives(phase1ID, phase2ID int) string {
	return fmt.Sprintf("SecRule REQUEST_LINE \"@%s %s 1\" \"id:%d,phase:1,pass,nolog,t:none\"\n"+
		"SecRule REQUEST_LINE \"@%[1]s %[2]s 2\" \"id:%[4]d,phase:2,pass,nolog,t:none\"\n",
		hookOperator, s.key, phase1ID, phase2ID)
}

// Memoizer returns the memoizer of the WAF the hook rules were parsed for
// (nil before), so that a plan shares that WAF's compiled operators.
func (s *Slot) Memoizer() plugintypes.Memoizer {
	m, _ := s.memo.Load().(plugintypes.Memoizer)
	return m
}

// Bind makes p the plan the hook rules run; nil turns pre-selection off.
func (s *Slot) Bind(p *Plan) { s.plan.Store(p) }

// Plan returns the bound plan, nil if none.
func (s *Slot) Plan() *Plan { return s.plan.Load() }

type hook struct {
	slot  *Slot
	phase int
}

func newHook(opts plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	key, ph, _ := strings.Cut(opts.Arguments, " ")
	v, ok := slots.Load(key)
	if !ok {
		return nil, fmt.Errorf("@%s: no compile in progress with key %q", hookOperator, key)
	}
	phase, err := strconv.Atoi(ph)
	if err != nil || phase < 1 || phase > 2 {
		return nil, fmt.Errorf("@%s: phase %q", hookOperator, ph)
	}
	s := v.(*Slot)
	if opts.Memoizer != nil {
		s.memo.Store(opts.Memoizer)
	}
	return &hook{slot: s, phase: phase}, nil
}

// Evaluate runs pre-selection for the hook's phase; it never matches.
func (h *hook) Evaluate(tx plugintypes.TransactionState, _ string) bool {
	if p := h.slot.plan.Load(); p != nil {
		p.Select(tx, h.phase)
	}
	return false
}
