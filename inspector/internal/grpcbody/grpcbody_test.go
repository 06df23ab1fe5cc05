package grpcbody

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"

	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody/grpctest"
)

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

func grpcBodyCases(t testing.TB) []grpcBodyCase {
	t.Helper()
	user := grpctest.Message(grpctest.String(1, "users/42"), grpctest.Varint(2, 7), grpctest.String(3, "Ada"))
	nested := grpctest.Message(grpctest.String(1, "orders"), grpctest.String(2, string(grpctest.Message(grpctest.String(1, "1' UNION SELECT password FROM users--"), grpctest.Varint(2, 256)))))
	return []grpcBodyCase{
		{name: "strings, numbers left out", body: grpctest.Frame(0, user),
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.3": {"Ada"}}},
		{name: "nested message of one string: the string, and the string glued to its tag (field 1, LF) and length (37, '%')", body: grpctest.Frame(0, nested),
			want: map[string][]string{"grpc.1": {"orders"}, "grpc.2.1": {"1' UNION SELECT password FROM users--"}, "grpc.2.raw": {"%1' UNION SELECT password FROM users--"}}},
		{name: "nested message text joins its fields, NUL and tags left out; the tag of field 4 (a quote) is text outside them",
			body: grpctest.Frame(0, grpctest.String(2, string(grpctest.Message(grpctest.String(1, "' /*"), grpctest.Varint(3, 0), grpctest.String(4, "*/ OR 1=1--"))))),
			want: map[string][]string{"grpc.2": {"' /* */ OR 1=1--"}, "grpc.2.1": {"' /*"}, "grpc.2.4": {"*/ OR 1=1--"}, "grpc.2.raw": {`"`}}},
		{name: "a string that parses as numbers stays a string", body: grpctest.Frame(0, grpctest.String(1, "hi")),
			want: map[string][]string{"grpc.1": {"hi"}}},
		{name: "a nested message of numbers only is no argument", body: grpctest.Frame(0, grpctest.String(2, string(grpctest.Varint(1, 5)))),
			want: map[string][]string{}},
		{name: "repeated field and two messages (client stream)", body: slices.Concat(grpctest.Frame(0, grpctest.Message(grpctest.String(4, "a"), grpctest.String(4, "b"))), grpctest.Frame(0, grpctest.String(4, "c"))),
			want: map[string][]string{"grpc_0.4_0": {"a"}, "grpc_0.4_1": {"b"}, "grpc_1.4": {"c"}}},
		{name: "repeated nested messages: each indexed, its text too",
			body: grpctest.Frame(0, grpctest.Message(grpctest.String(1, string(grpctest.String(1, "x"))), grpctest.String(1, string(grpctest.Message(grpctest.String(1, "y"), grpctest.String(2, "z")))))),
			want: map[string][]string{"grpc.1_0.1": {"x"}, "grpc.1_1": {"y z"}, "grpc.1_1.1": {"y"}, "grpc.1_1.2": {"z"}}},
		{name: "deep nesting stops at the text bound", body: grpctest.Frame(0, grpctest.Deep(30, strings.Repeat("q", 20000))),
			overArgs: true, want: map[string][]string{"grpc.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.2": {strings.Repeat("q", 20000)}},
			lenient: true},
		{name: "numbers that read as text", body: grpctest.Frame(0, grpctest.String(2, "\x29abcdefgh")),
			want: map[string][]string{"grpc.2": {")abcdefgh"}}},
		{name: "not protobuf: one string", body: grpctest.Frame(0, []byte(`{"q":"<script>alert(1)</script>"}`)),
			want: map[string][]string{"grpc": {`{"q":"<script>alert(1)</script>"}`}}},
		{name: "binary bytes: mostly printable ones are text, the text in others is raw", body: grpctest.Frame(0, grpctest.Message(grpctest.String(5, "\xff\xfe\x00\x01ab"), grpctest.String(6, "\xffcat /etc/passwd\x00"))),
			want: map[string][]string{"grpc.5.raw": {"ab"}, "grpc.6": {"cat /etc/passwd"}}},
		{name: "a string that parses as a message is a string too", body: grpctest.Frame(0, grpctest.String(1, `1' OR 1=1--   "#`+strings.Repeat("x", 35))),
			want: map[string][]string{"grpc.1": {`1' OR 1=1--   "#` + strings.Repeat("x", 35)}, "grpc.1.4": {strings.Repeat("x", 35)}}},
		{name: "text in tags and numbers of a message that is not text is raw", body: grpctest.Frame(0, grpctest.String(1, "\x08\x00"+`1' OR 1=1--   "#`+strings.Repeat("x", 35))),
			want: map[string][]string{"grpc.1.raw": {`1' OR 1=1--   "#` + strings.Repeat("x", 35)}, "grpc.1.4": {strings.Repeat("x", 35)}}},
		{name: "binary padding: the text in it is raw", body: grpctest.Frame(0, grpctest.String(1, "1' OR 1=1--"+strings.Repeat("\xff", 40))),
			want: map[string][]string{"grpc.1.raw": {"1' OR 1=1--"}}},
		{name: "a string with control characters: as it is, and its text raw", body: grpctest.Frame(0, grpctest.String(1, "a\x00\x01b\x7f")),
			want: map[string][]string{"grpc.1": {"a\x00\x01b\x7f"}, "grpc.1.raw": {"a b"}}},
		{name: "string cut by the end of the body: its text is raw", body: grpctest.Frame(0, grpctest.Message(grpctest.String(1, "users/42"), grpctest.String(3, "' OR 1=1-- and more")))[:5+10+2+16],
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.raw": {"' OR 1=1-- and m"}}},
		{name: "gzip", encoding: "gzip", body: grpctest.Frame(1, grpctest.Gzip(t, user)),
			want: map[string][]string{"grpc.1": {"users/42"}, "grpc.3": {"Ada"}}},
		{name: "message cut by the end of the body", body: grpctest.Frame(0, user)[:5+len(user)-3],
			want: map[string][]string{"grpc.1": {"users/42"}}},
		{name: "non-protobuf message cut by the end of the body", body: grpctest.Frame(0, []byte("{\"q\":\"' or 1=1--\"}"))[:14],
			want: map[string][]string{"grpc": {"{\"q\":\"' o"}}},
		{name: "frame header cut", body: []byte{0, 0, 0},
			want: map[string][]string{}},
		{name: "argument limit", limit: 2, body: grpctest.Frame(0, grpctest.Message(grpctest.String(1, "a"), grpctest.String(1, "b"), grpctest.String(1, "c"))),
			want: map[string][]string{"grpc.1_0": {"a"}, "grpc.1_1": {"b"}}, overArgs: true},
		{name: "unknown compression is an error", encoding: "snappy", body: grpctest.Frame(1, user),
			wantErr: `compressed with "snappy"`},
		{name: "compressed without grpc-encoding is an error", body: grpctest.Frame(1, grpctest.Gzip(t, user)),
			wantErr: `compressed with "identity"`},
		{name: "broken gzip is an error", encoding: "gzip", body: grpctest.Frame(1, []byte("not gzip")),
			wantErr: "gzip"},
		{name: "trailer flag is an error", body: grpctest.Frame(0x80, user),
			wantErr: "flag 0x80"},
		{name: "gzip bomb is an error", encoding: "gzip", body: grpctest.Frame(1, grpctest.Gzip(t, make([]byte, grpcMaxInflated+1))),
			wantErr: "inflate to over"},
		{name: "gzip bomb spread over messages is an error", encoding: "gzip",
			body:    bytes.Repeat(grpctest.Frame(1, grpctest.Gzip(t, make([]byte, grpcMaxInflated/3+1))), 3),
			wantErr: "inflate to over"},
		{name: "gzip messages within the bound", encoding: "gzip",
			body: bytes.Repeat(grpctest.Frame(1, grpctest.Gzip(t, grpctest.String(1, strings.Repeat("a", grpcMaxInflated/4)))), 3),
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
	Register()
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
