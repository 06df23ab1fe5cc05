package inspector

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody/grpctest"
)

// The GRPC body processor in the engine: exclusions, paranoia levels and
// the profile's bounds (the processor alone: internal/grpcbody).

// TestGRPCExclusionTarget checks that gRPC fields are named in exclusions
// like any argument. A nested field's text is also in the text of the
// message holding it (and, glued to its tag and length, in its ".raw"
// text), so an exclusion names them all.
func TestGRPCExclusionTarget(t *testing.T) {
	sqli := "1' UNION SELECT password FROM users--"
	inField := func(num protowire.Number) Request {
		return grpcCall(grpctest.Message(grpctest.String(1, "orders"), grpctest.String(2, string(grpctest.Message(grpctest.String(num, sqli), grpctest.String(5, "gift wrap"))))), "")
	}
	for _, tc := range []struct {
		targets []string
		req     Request
		want    Decision
	}{
		{[]string{"ARGS:grpc.2.1", "ARGS:grpc.2", "ARGS:grpc.2.raw"}, inField(1), Allow},
		{[]string{"ARGS:grpc.2.1"}, inField(1), Deny},
		{[]string{"ARGS:grpc.2.1", "ARGS:grpc.2"}, grpcCall(grpctest.String(3, sqli), ""), Deny},
	} {
		rs, err := Compile(Profile{Exclusions: []Exclusion{{Tags: []string{"attack-sqli"}, Targets: tc.targets}}})
		if err != nil {
			t.Fatal(err)
		}
		v, err := rs.Inspect(t.Context(), tc.req, "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != tc.want {
			t.Errorf("targets %v, body %q: %v (rules %v), want %v", tc.targets, tc.req.Body, v.Decision, v.RuleIDs(), tc.want)
		}
	}
}

// TestGRPCOrdinaryMessagesPL3 checks that ordinary protobuf (a Struct of
// maps, lists, numbers, booleans and nested messages, as grpc-go encodes
// it, map entries in any order) scores nothing at paranoia levels 1 to 3:
// the framing, tags, lengths and numbers are not what CRS sees, argument
// names hold no character CRS counts, and the text of the messages
// themselves (".raw", with tags such as '*' and lengths such as '%') is
// read by the level 1 rules only. (At level 4, 920273 flags the spaces of
// any text argument.)
func TestGRPCOrdinaryMessagesPL3(t *testing.T) {
	pl3, err := Compile(Profile{ParanoiaLevel: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		pl      int
		rs      *RuleSet
		profile string
	}{{1, testRuleSet(t), ""}, {2, testRuleSet(t), profPL2}, {3, pl3, ""}} {
		for i := range 5 {
			v, err := p.rs.Inspect(t.Context(), grpcCall(ordinaryStruct(t, 0, "", i == 0), ""), p.profile)
			if err != nil {
				t.Fatal(err)
			}
			if v.AnomalyScore != 0 {
				for _, m := range v.Matches {
					t.Logf("%d %s %q", m.ID, m.Msg, m.Data)
				}
				t.Fatalf("PL%d: score %d, rules %v", p.pl, v.AnomalyScore, v.RuleIDs())
			}
		}
	}
}

// TestGRPCLargeStructWithinBound: a message's own text holds only what its
// fields do not, so nested messages do not repeat their strings once per
// level, and an ordinary 85 KiB Struct (long strings 8 messages deep)
// stays within the argument-text bound (8 times the body).
func TestGRPCLargeStructWithinBound(t *testing.T) {
	msg := ordinaryStruct(t, 40, strings.Repeat("gift wrap ", 200), false)
	v, err := testRuleSet(t).Inspect(t.Context(), grpcCall(msg, ""), "")
	if err != nil {
		t.Fatal(err)
	}
	if v.Decision != Allow {
		t.Fatalf("%d bytes: %v, rules %v", len(msg), v.Decision, v.RuleIDs())
	}
}

// TestGRPCInflateBoundedByProfile: compressed messages may not inflate past
// the profile's request body limit, which a plain body could not exceed
// either; within it they are inspected.
func TestGRPCInflateBoundedByProfile(t *testing.T) {
	rs, err := Compile(Profile{RequestBodyLimit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size int
		want Decision
		rule int
	}{
		{32 << 10, Allow, 0},
		{100 << 10, Deny, 200002},
	} {
		v, err := rs.Inspect(t.Context(), grpcCall(grpctest.String(1, strings.Repeat("hello ", tc.size/6)), "gzip"), "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != tc.want || (tc.rule != 0 && !slices.Contains(v.RuleIDs(), tc.rule)) {
			t.Errorf("%d bytes inflated: %v %v, want %v with %d", tc.size, v.Decision, v.RuleIDs(), tc.want, tc.rule)
		}
	}
}
