package inspector

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"google.golang.org/protobuf/encoding/protowire"
)

// pbString is a length-delimited protobuf field.
func pbString(num protowire.Number, v string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func pbVarint(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func pbMessage(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

// grpcFrame is one length-prefixed gRPC message.
func grpcFrame(flag byte, msg []byte) []byte {
	b := []byte{flag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type grpcBodyCase struct {
	name     string
	body     []byte
	encoding string
	limit    int
	want     map[string][]string // ARGS_POST
	wantErr  string              // in REQBODY_ERROR_MSG
	overArgs bool
	lenient  bool // want names only some of the arguments
}

// deepMessage nests a message with leaf s and a sibling "x" depth times:
// every level has two fields, so every level's text is an argument.
func deepMessage(depth int, s string) []byte {
	m := pbMessage(pbString(1, "x"), pbString(2, s))
	for range depth - 1 {
		m = pbMessage(pbString(1, string(m)), pbString(2, "x"))
	}
	return m
}

func grpcBodyCases(t testing.TB) []grpcBodyCase {
	t.Helper()
	user := pbMessage(pbString(1, "users/42"), pbVarint(2, 7), pbString(3, "Ada"))
	nested := pbMessage(pbString(1, "orders"), pbString(2, string(pbMessage(pbString(1, "1' UNION SELECT password FROM users--"), pbVarint(2, 256)))))
	return []grpcBodyCase{
		{name: "strings, numbers left out", body: grpcFrame(0, user),
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.3": {"Ada"}}},
		{name: "nested message of one string: the string, and the string glued to its tag (field 1, LF) and length (37, '%')", body: grpcFrame(0, nested),
			want: map[string][]string{"grpc.1": {"orders"}, "grpc.2.1": {"1' UNION SELECT password FROM users--"}, "grpc.2.raw": {"%1' UNION SELECT password FROM users--"}}},
		{name: "nested message text joins its fields, NUL and tags left out; the tag of field 4 (a quote) is text outside them",
			body: grpcFrame(0, pbString(2, string(pbMessage(pbString(1, "' /*"), pbVarint(3, 0), pbString(4, "*/ OR 1=1--"))))),
			want: map[string][]string{"grpc.2": {"' /* */ OR 1=1--"}, "grpc.2.1": {"' /*"}, "grpc.2.4": {"*/ OR 1=1--"}, "grpc.2.raw": {`"`}}},
		{name: "a string that parses as numbers stays a string", body: grpcFrame(0, pbString(1, "hi")),
			want: map[string][]string{"grpc.1": {"hi"}}},
		{name: "a nested message of numbers only is no argument", body: grpcFrame(0, pbString(2, string(pbVarint(1, 5)))),
			want: map[string][]string{}},
		{name: "repeated field and two messages (client stream)", body: slices.Concat(grpcFrame(0, pbMessage(pbString(4, "a"), pbString(4, "b"))), grpcFrame(0, pbString(4, "c"))),
			want: map[string][]string{"grpc_0.4_0": {"a"}, "grpc_0.4_1": {"b"}, "grpc_1.4": {"c"}}},
		{name: "repeated nested messages: each indexed, its text too",
			body: grpcFrame(0, pbMessage(pbString(1, string(pbString(1, "x"))), pbString(1, string(pbMessage(pbString(1, "y"), pbString(2, "z")))))),
			want: map[string][]string{"grpc.1_0.1": {"x"}, "grpc.1_1": {"y z"}, "grpc.1_1.1": {"y"}, "grpc.1_1.2": {"z"}}},
		{name: "deep nesting stops at the text bound", body: grpcFrame(0, deepMessage(30, strings.Repeat("q", 20000))),
			overArgs: true, want: map[string][]string{"grpc.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.2": {strings.Repeat("q", 20000)}},
			lenient: true},
		{name: "numbers that read as text", body: grpcFrame(0, pbString(2, "\x29abcdefgh")),
			want: map[string][]string{"grpc.2": {")abcdefgh"}}},
		{name: "not protobuf: one string", body: grpcFrame(0, []byte(`{"q":"<script>alert(1)</script>"}`)),
			want: map[string][]string{"grpc": {`{"q":"<script>alert(1)</script>"}`}}},
		{name: "binary bytes: mostly printable ones are text, the text in others is raw", body: grpcFrame(0, pbMessage(pbString(5, "\xff\xfe\x00\x01ab"), pbString(6, "\xffcat /etc/passwd\x00"))),
			want: map[string][]string{"grpc.5.raw": {"ab"}, "grpc.6": {"cat /etc/passwd"}}},
		{name: "a string that parses as a message is a string too", body: grpcFrame(0, pbString(1, `1' OR 1=1--   "#`+strings.Repeat("x", 35))),
			want: map[string][]string{"grpc.1": {`1' OR 1=1--   "#` + strings.Repeat("x", 35)}, "grpc.1.4": {strings.Repeat("x", 35)}}},
		{name: "text in tags and numbers of a message that is not text is raw", body: grpcFrame(0, pbString(1, "\x08\x00"+`1' OR 1=1--   "#`+strings.Repeat("x", 35))),
			want: map[string][]string{"grpc.1.raw": {`1' OR 1=1--   "#` + strings.Repeat("x", 35)}, "grpc.1.4": {strings.Repeat("x", 35)}}},
		{name: "binary padding: the text in it is raw", body: grpcFrame(0, pbString(1, "1' OR 1=1--"+strings.Repeat("\xff", 40))),
			want: map[string][]string{"grpc.1.raw": {"1' OR 1=1--"}}},
		{name: "a string with control characters: as it is, and its text raw", body: grpcFrame(0, pbString(1, "a\x00\x01b\x7f")),
			want: map[string][]string{"grpc.1": {"a\x00\x01b\x7f"}, "grpc.1.raw": {"a b"}}},
		{name: "string cut by the end of the body: its text is raw", body: grpcFrame(0, pbMessage(pbString(1, "users/42"), pbString(3, "' OR 1=1-- and more")))[:5+10+2+16],
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.raw": {"' OR 1=1-- and m"}}},
		{name: "gzip", encoding: "gzip", body: grpcFrame(1, gzipped(t, user)),
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.3": {"Ada"}}},
		{name: "message cut by the end of the body", body: grpcFrame(0, user)[:5+len(user)-3],
			want: map[string][]string{"grpc.1": {"users/42"}}},
		{name: "non-protobuf message cut by the end of the body", body: grpcFrame(0, []byte("{\"q\":\"' or 1=1--\"}"))[:14],
			want: map[string][]string{"grpc": {"{\"q\":\"' o"}}},
		{name: "frame header cut", body: []byte{0, 0, 0},
			want: map[string][]string{}},
		{name: "argument limit", limit: 2, body: grpcFrame(0, pbMessage(pbString(1, "a"), pbString(1, "b"), pbString(1, "c"))),
			want: map[string][]string{"grpc.1_0": {"a"}, "grpc.1_1": {"b"}}, overArgs: true},
		{name: "unknown compression is an error", encoding: "snappy", body: grpcFrame(1, user),
			wantErr: `compressed with "snappy"`},
		{name: "compressed without grpc-encoding is an error", body: grpcFrame(1, gzipped(t, user)),
			wantErr: `compressed with "identity"`},
		{name: "broken gzip is an error", encoding: "gzip", body: grpcFrame(1, []byte("not gzip")),
			wantErr: "gzip"},
		{name: "trailer flag is an error", body: grpcFrame(0x80, user),
			wantErr: "flag 0x80"},
		{name: "gzip bomb is an error", encoding: "gzip", body: grpcFrame(1, gzipped(t, make([]byte, grpcMaxInflated+1))),
			wantErr: "inflate to over"},
		{name: "gzip bomb spread over messages is an error", encoding: "gzip",
			body:    bytes.Repeat(grpcFrame(1, gzipped(t, make([]byte, grpcMaxInflated/3+1))), 3),
			wantErr: "inflate to over"},
		{name: "gzip messages within the bound", encoding: "gzip",
			body: bytes.Repeat(grpcFrame(1, gzipped(t, pbString(1, strings.Repeat("a", grpcMaxInflated/4)))), 3),
			want: map[string][]string{"grpc_0.1": {strings.Repeat("a", grpcMaxInflated/4)}, "grpc_1.1": {strings.Repeat("a", grpcMaxInflated/4)}, "grpc_2.1": {strings.Repeat("a", grpcMaxInflated/4)}}},
	}
}

// runGRPCBody runs body through a Coraza transaction whose body processor
// is GRPC and returns its ARGS_POST and request body error.
func runGRPCBody(t testing.TB, tc grpcBodyCase) (args map[string][]string, errMsg string, overArgs bool) {
	t.Helper()
	limit := tc.limit
	if limit == 0 {
		limit = 1000
	}
	waf, err := coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(strings.Join([]string{
		"SecRuleEngine On", "SecRequestBodyAccess On", "SecArgumentsLimit " + strconv.Itoa(limit),
		`SecRule REQUEST_HEADERS:Content-Type "^application/grpc" "id:1,phase:1,pass,nolog,ctl:requestBodyProcessor=GRPC"`,
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	tx := waf.NewTransaction()
	defer tx.Close()
	tx.ProcessURI("/pkg.Svc/Method", "POST", "HTTP/2")
	tx.AddRequestHeader("Content-Type", "application/grpc")
	if tc.encoding != "" {
		tx.AddRequestHeader("Grpc-Encoding", tc.encoding)
	}
	tx.ProcessRequestHeaders()
	if _, _, err := tx.WriteRequestBody(tc.body); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ProcessRequestBody(); err != nil {
		t.Fatal(err)
	}
	vars := tx.(plugintypes.TransactionState).Variables()
	args = map[string][]string{}
	for _, md := range vars.ArgsPost().FindAll() {
		args[md.Key()] = append(args[md.Key()], md.Value())
	}
	if vars.RequestBodyError().Get() != "0" {
		errMsg = vars.RequestBodyErrorMsg().Get()
		if errMsg == "" {
			errMsg = "request body error"
		}
	}
	if got := vars.RequestBody().Get(); got != "" {
		t.Errorf("REQUEST_BODY holds %d bytes, want it empty as with JSON", len(got))
	}
	if got := vars.RequestBodyLength().Get(); got != strconv.Itoa(len(tc.body)) && len(tc.body) > 0 {
		t.Errorf("REQUEST_BODY_LENGTH %s, want %d", got, len(tc.body))
	}
	return args, errMsg, vars.ArgumentsLimitReached().Get() == "1"
}

func TestGRPCBodyProcessor(t *testing.T) {
	for _, tc := range grpcBodyCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			args, errMsg, over := runGRPCBody(t, tc)
			if tc.wantErr != "" {
				if !strings.Contains(errMsg, tc.wantErr) {
					t.Fatalf("body error %q, want one containing %q", errMsg, tc.wantErr)
				}
				return
			}
			if errMsg != "" {
				t.Fatalf("unexpected body error %q", errMsg)
			}
			if over != tc.overArgs {
				t.Fatalf("arguments limit reached = %v, want %v", over, tc.overArgs)
			}
			for k, want := range tc.want {
				if got := args[k]; !slices.Equal(got, want) {
					t.Errorf("ARGS_POST:%s = %q, want %q", k, got, want)
				}
			}
			for k := range args {
				if _, ok := tc.want[k]; !ok && !tc.lenient {
					t.Errorf("unexpected ARGS_POST:%s = %q", k, args[k])
				}
			}
		})
	}
}

// FuzzGRPCBody feeds arbitrary bodies to the processor: it must not panic
// and must keep to the argument limit.
func FuzzGRPCBody(f *testing.F) {
	for _, tc := range grpcBodyCases(f) {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		args, _, _ := runGRPCBody(t, grpcBodyCase{body: body, limit: 50, encoding: "gzip"})
		n := 0
		for _, v := range args {
			n += len(v)
		}
		if n > 50 {
			t.Fatalf("%d arguments, limit 50", n)
		}
	})
}

// TestGRPCExclusionTarget checks that gRPC fields are named in exclusions
// like any argument. A nested field's text is also in the text of the
// message holding it (and, glued to its tag and length, in its ".raw"
// text), so an exclusion names them all.
func TestGRPCExclusionTarget(t *testing.T) {
	sqli := "1' UNION SELECT password FROM users--"
	inField := func(num protowire.Number) Request {
		return grpcCall(pbMessage(pbString(1, "orders"), pbString(2, string(pbMessage(pbString(num, sqli), pbString(5, "gift wrap"))))), "")
	}
	for _, tc := range []struct {
		targets []string
		req     Request
		want    Decision
	}{
		{[]string{"ARGS:grpc.2.1", "ARGS:grpc.2", "ARGS:grpc.2.raw"}, inField(1), Allow},
		{[]string{"ARGS:grpc.2.1"}, inField(1), Deny},
		{[]string{"ARGS:grpc.2.1", "ARGS:grpc.2"}, grpcCall(pbString(3, sqli), ""), Deny},
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
		v, err := rs.Inspect(t.Context(), grpcCall(pbString(1, strings.Repeat("hello ", tc.size/6)), "gzip"), "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != tc.want || (tc.rule != 0 && !slices.Contains(v.RuleIDs(), tc.rule)) {
			t.Errorf("%d bytes inflated: %v %v, want %v with %d", tc.size, v.Decision, v.RuleIDs(), tc.want, tc.rule)
		}
	}
}
