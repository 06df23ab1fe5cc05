package inspector

import (
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestDFAMemoryReleasedWithRuleSet: a rule set that is closed and dropped
// gives back what its DFAs held, and still answers while it is in use.
func TestDFAMemoryReleasedWithRuleSet(t *testing.T) {
	rule := `SecRule ARGS "@rx (?i)meshwaf[_-]?only[0-9]+(?:alpha|beta|gamma)\b" "id:99990,phase:2,deny,log,msg:'test'"`
	rs, err := Compile(Profile{AfterCRS: rule})
	if err != nil {
		t.Fatal(err)
	}
	before := settledDFABytes()
	// Short values that only this rule's pattern has not seen: its DFA
	// builds states (the CRS patterns' DFAs may be warm already).
	var req Request
	for i := range 20 {
		req = Request{Method: "GET", URI: "/?q=meshwaf_only" + strconv.Itoa(i) + "alpha", Protocol: "HTTP/1.1", Host: "a.example"}
		v, err := rs.Inspect(t.Context(), req, "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(v.RuleIDs(), 99990) {
			t.Fatalf("%s: rule 99990 did not match (%v)", req.URI, v.RuleIDs())
		}
	}
	grown, _ := RxDFAStats()
	if grown <= before {
		t.Fatalf("DFA bytes %d -> %d: the pattern built no states", before, grown)
	}
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Inspect(t.Context(), req, ""); err != nil {
		t.Fatalf("inspecting after Close: %v", err)
	}
	rs = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if now, _ := RxDFAStats(); now < grown {
			return
		}
		if time.Now().After(deadline) {
			now, _ := RxDFAStats()
			t.Fatalf("DFA bytes still %d (grown %d) after the rule set was dropped", now, grown)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settledDFABytes collects what earlier tests dropped (standalone DFAs) and
// returns the DFA bytes once they stop moving.
func settledDFABytes() int64 {
	last := int64(-1)
	for range 50 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		b, _ := RxDFAStats()
		if b == last {
			return b
		}
		last = b
	}
	return last
}
