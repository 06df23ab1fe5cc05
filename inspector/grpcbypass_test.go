package inspector

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody/grpctest"
)

// grpcAttacks are payloads the default profile denies as a JSON value
// (TestGRPCAttacksDeniedAsJSON checks it): the case table's attacks.
var grpcAttacks = []string{
	sqliPayload, xssPayload, lfiPayload, rcePayload, rceSubst, shellshockUA,
	"1' UNION SELECT password FROM users--", "; cat /etc/passwd", "1' OR 1=1--", "1; cat /etc/passwd",
}

// jsonValue is a JSON API call carrying s as the value of one field.
func jsonValue(s string) Request {
	return send("POST", "HTTP/1.1", "/api/v1/orders", "application/json", `{"q":`+jsonString(s)+`}`)
}

// asProtobuf appends spaces to s until it parses as a whole protobuf
// message (a space is the tag of a varint field, whose value is the next
// byte), then a length-delimited field `"` (field 4) of 35 ('#') bytes:
// the text reads as a message of one string field, and the bytes of s fall
// inside tags, varints and fixed-size numbers. ok is false when the bytes
// of s are no protobuf at all.
func asProtobuf(s string) (msg []byte, ok bool) {
	for pad := range 10 {
		b := []byte(s + strings.Repeat(" ", pad))
		if grpctest.IsMessage(b) {
			return append(b, `"#`+strings.Repeat("x", 35)...), true
		}
	}
	return nil, false
}

// grpcBypassCases are the two shapes that hid an attack in a gRPC string
// field (issue 11): bytes that also parse as protobuf, and bytes that are
// not UTF-8 and mostly not printable.
func grpcBypassCases(t testing.TB) []struct {
	name  string
	field []byte
} {
	t.Helper()
	parsed := func(s string) []byte {
		b, ok := asProtobuf(s)
		if !ok {
			t.Fatalf("%q does not parse as protobuf", s)
		}
		return b
	}
	return []struct {
		name  string
		field []byte
	}{
		{"sqli parsing as protobuf", parsed("1' OR 1=1--")},
		{"rce parsing as protobuf", parsed("1; cat  /etc/passwd")},
		{"sqli padded with 0xff", append([]byte("1' OR 1=1--"), bytes.Repeat([]byte{0xff}, 40)...)},
		{"sqli, spaces and one 0xff", []byte("1' OR 1=1--" + strings.Repeat(" ", 40) + "\xff")},
		{"rce padded with NULs and 0xff", []byte("\xff\x00\x00; cat /etc/passwd" + strings.Repeat("\x00\xff", 30))},
	}
}

// TestGRPCBypassShapes: an attack in a gRPC string field is denied whatever
// the rest of the field's bytes, at PL1 and PL2, nested or not,
// compressed or not.
func TestGRPCBypassShapes(t *testing.T) {
	rs := testRuleSet(t)
	for _, tc := range grpcBypassCases(t) {
		for _, wrap := range []struct {
			name string
			msg  func([]byte) []byte
			enc  string
		}{
			{"top", func(f []byte) []byte { return grpctest.String(1, string(f)) }, ""},
			{"nested", func(f []byte) []byte {
				return grpctest.Message(grpctest.String(1, "orders"), grpctest.String(2, string(grpctest.Message(grpctest.Varint(1, 3), grpctest.String(7, string(f))))))
			}, ""},
			{"gzip", func(f []byte) []byte { return grpctest.String(3, string(f)) }, "gzip"},
		} {
			for _, profile := range []string{"", profPL2} {
				t.Run(tc.name+"/"+wrap.name+"/"+profile, func(t *testing.T) {
					v, err := rs.Inspect(t.Context(), grpcCall(wrap.msg(tc.field), wrap.enc), profile)
					if err != nil {
						t.Fatal(err)
					}
					if v.Decision != Deny {
						t.Errorf("field %q: %v, score %d, rules %v; want deny", tc.field, v.Decision, v.AnomalyScore, v.RuleIDs())
					}
				})
			}
		}
	}
}

// ordinaryStruct is an order as a google.protobuf.Struct (maps, lists,
// numbers, booleans, nested messages), as grpc-go encodes it (map entries
// in random order unless deterministic). It has n line items after the
// first, each with a note.
func ordinaryStruct(t testing.TB, n int, note string, deterministic bool) []byte {
	t.Helper()
	items := []any{map[string]any{"sku": "A-1001", "qty": 2}, map[string]any{"sku": "B-2002", "qty": 1}}
	for i := range n {
		items = append(items, map[string]any{"sku": "C-" + strconv.Itoa(3000+i), "qty": i % 7, "note": note})
	}
	msg, err := structpb.NewStruct(map[string]any{
		"customer": "Ada Lovelace", "vip": true, "balance": 1234.5, "zero": 0, "ids": []any{1, 256, 65536},
		"items":    items,
		"delivery": map[string]any{"address": "12 St James Square London", "note": "leave at the door"},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.MarshalOptions{Deterministic: deterministic}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkGRPCInspect inspects gRPC calls with the default profile: an
// ordinary Struct (about 300 bytes), a large one (80 KiB, long strings 8
// messages deep), the worst case for the argument-text bound (32 nested
// messages around an 8 KiB string: the bound stops it and 99001 denies),
// and 64 KiB of random bytes in a bytes field, whose text (about 38 KiB of
// short runs) costs as much as the same text in a JSON value
// (JSONOfBinaryText).
func BenchmarkGRPCInspect(b *testing.B) {
	rnd := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	rs := testRuleSet(b)
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"Struct", grpcCall(ordinaryStruct(b, 0, "", true), "")},
		{"StructLarge", grpcCall(ordinaryStruct(b, 40, strings.Repeat("gift wrap ", 200), true), "")},
		{"Deep32x8KiB", grpcCall(grpctest.Deep(32, strings.Repeat("q", 8<<10)), "")},
		{"Binary64KiB", grpcCall(grpctest.String(1, string(rnd)), "")},
		{"JSONOfBinaryText", jsonValue(seenText(rnd))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v, err := rs.Inspect(b.Context(), tc.req, "")
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%d body bytes: %v, score %d, rules %v", len(tc.req.Body), v.Decision, v.AnomalyScore, v.RuleIDs())
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.req.Body)))
			for b.Loop() {
				if _, err := rs.Inspect(b.Context(), tc.req, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestGRPCAttacksDeniedAsJSON: the payloads of the property test and the
// fuzz seeds are denied as a JSON value, so they test the gRPC reading,
// not CRS.
func TestGRPCAttacksDeniedAsJSON(t *testing.T) {
	rs := testRuleSet(t)
	for _, a := range grpcAttacks {
		if v, err := rs.Inspect(t.Context(), jsonValue(a), ""); err != nil || v.Decision != Deny {
			t.Errorf("%q as a JSON value: %v (%v), want deny", a, v.Decision, err)
		}
	}
}

// seenText is field as a reader sees it: printable ASCII, tab, CR, LF and
// UTF-8 letters (above U+009F) as they are, any run of other bytes as one
// space, none at either end. CRS must read it as it reads a JSON value.
func seenText(field []byte) string {
	var out []byte
	gap := false
	for len(field) > 0 {
		r, n := utf8.DecodeRune(field)
		if r >= ' ' && r <= '~' || r == '\t' || r == '\n' || r == '\r' || r >= 0xa0 && (r != utf8.RuneError || n == 3) {
			if gap && len(out) > 0 {
				out = append(out, ' ')
			}
			out, gap = append(out, field[:n]...), false
		} else {
			gap = true
		}
		field = field[n:]
	}
	return string(out)
}

// grpcAttackCall builds a gRPC call whose message holds field (bytes of a
// string or bytes field) as field num at depth (1: a field of the
// message), with other fields around it at every level, compressed when gz.
func grpcAttackCall(field []byte, num protowire.Number, depth int, gz bool, r *rand.Rand) Request {
	msg := grpctest.String(num, string(field))
	for level := depth; level > 0; level-- {
		var around [][]byte
		for range r.IntN(4) {
			k := protowire.Number(1 + r.IntN(20))
			switch r.IntN(4) {
			case 0:
				around = append(around, grpctest.String(k, "Ada Lovelace"))
			case 1:
				around = append(around, grpctest.Varint(k, r.Uint64N(1<<20)))
			case 2:
				around = append(around, protowire.AppendFixed64(protowire.AppendTag(nil, k, protowire.Fixed64Type), r.Uint64()))
			default:
				around = append(around, grpctest.String(k, string(grpctest.Message(grpctest.String(1, "sku"), grpctest.Varint(2, 3)))))
			}
		}
		at := r.IntN(len(around) + 1)
		msg = grpctest.Message(slices.Concat(around[:at], [][]byte{msg}, around[at:])...)
		if level > 1 {
			msg = grpctest.String(protowire.Number(1+r.IntN(20)), string(msg))
		}
	}
	enc := ""
	if gz {
		enc = "gzip"
	}
	return grpcCall(msg, enc)
}

// grpcPad returns random bytes to put beside an attack: protobuf tags
// and lengths, 0xff, control bytes, spaces and quotes, and plain letters.
// The byte next to the attack (last when before) is never a letter.
func grpcPad(r *rand.Rand, before bool) []byte {
	const alphabet = "\xff\xfe\x80\x00\x01\x08\x0a\x12\x1a \"*2:!%-x"
	var b []byte
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		b = bytes.Repeat([]byte{0xff}, 1+r.IntN(40))
	case 2:
		b = append(bytes.Repeat([]byte(" "), 1+r.IntN(40)), 0xff)
		if before {
			slices.Reverse(b)
		}
	default:
		for range 1 + r.IntN(30) {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
	}
	if next := b[len(b)-1]; before && next == 'x' {
		b[len(b)-1] = ' '
	}
	if !before && b[0] == 'x' {
		b[0] = ' '
	}
	return b
}

// grpcAttackField puts attack a in field bytes: between random pads, or
// shaped to parse as protobuf, optionally with a number field that makes
// the bytes no text.
func grpcAttackField(r *rand.Rand, a string) []byte {
	if r.IntN(3) == 0 {
		if b, ok := asProtobuf(a); ok {
			if r.IntN(2) == 0 {
				return append([]byte{0x08, 0x00}, b...)
			}
			return b
		}
	}
	return slices.Concat(grpcPad(r, true), []byte(a), grpcPad(r, false))
}

// TestGRPCAttackAnywhereDenied is the property of issue 11: a text that the
// default profile denies as a JSON value is denied in a gRPC string or
// bytes field, whatever is around it: binary bytes, spaces and quotes,
// bytes that make it parse as protobuf, other fields at any depth, gzip.
//
// The texts are those the default profile without corroboration denies: the
// paranoia-level-2 rules corroboration runs stay off text read out of
// binary bytes, like every PL2 rule (grpcbody.RawRule).
func TestGRPCAttackAnywhereDenied(t *testing.T) {
	rs := testRuleSet(t)
	off := false
	pl1, err := Compile(Profile{Corroboration: &off})
	if err != nil {
		t.Fatal(err)
	}
	defer pl1.Close()
	r := rand.New(rand.NewPCG(11, 2026))
	const samples = 300
	skipped := 0
	for i := range samples {
		a := grpcAttacks[r.IntN(len(grpcAttacks))]
		field := grpcAttackField(r, a)
		if v, err := pl1.Inspect(t.Context(), jsonValue(seenText(field)), ""); err != nil || v.Decision != Deny {
			skipped++ // the text of the pads changed what the attack says
			continue
		}
		depth, num, gz := 1+r.IntN(6), protowire.Number(1+r.IntN(30)), r.IntN(2) == 0
		v, err := rs.Inspect(t.Context(), grpcAttackCall(field, num, depth, gz, r), "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != Deny {
			t.Errorf("sample %d: field %d at depth %d (gzip %v) = %q: %v, score %d, rules %v; want deny",
				i, num, depth, gz, field, v.Decision, v.AnomalyScore, v.RuleIDs())
		}
	}
	if skipped > samples/5 {
		t.Fatalf("%d of %d samples skipped: the pads glue too much to the attacks", skipped, samples)
	}
	t.Logf("%d samples, %d skipped", samples, skipped)
}

var defaultOnly struct {
	once sync.Once
	rs   *RuleSet
	err  error
}

// defaultRuleSet compiles the default profile alone, once per process: each
// fuzz worker compiles its own, and the shared test rule set holds ten more.
func defaultRuleSet(tb testing.TB) *RuleSet {
	tb.Helper()
	defaultOnly.once.Do(func() { defaultOnly.rs, defaultOnly.err = Compile(Profile{}) })
	if defaultOnly.err != nil {
		tb.Fatal(defaultOnly.err)
	}
	return defaultOnly.rs
}

// FuzzGRPCBypass looks for a field that hides an attack: the attack (a
// text the default profile denies as a JSON value, with whatever printable
// bytes the fuzzer glues to it) between any bytes, or shaped to parse as
// protobuf, at any depth, compressed or not, must be denied.
func FuzzGRPCBypass(f *testing.F) {
	for i, a := range grpcAttacks {
		f.Add(a, []byte{0xff}, []byte(" \xff"), uint8(i), uint8(i), i%3 == 0, i%2 == 0)
	}
	for i, tc := range grpcBypassCases(f) {
		f.Add("1' OR 1=1--", []byte(nil), tc.field, uint8(i), uint8(i), false, false)
	}
	rs := defaultRuleSet(f)
	f.Fuzz(func(t *testing.T, attack string, left, right []byte, depth, num uint8, shaped, gz bool) {
		if len(attack) == 0 || len(attack) > 200 || len(left)+len(right) > 400 {
			return
		}
		for _, c := range []byte(attack) {
			if c < 0x20 || c >= 0x7f {
				return // the attack is text; the pads hold the rest
			}
		}
		field := slices.Concat(left, []byte(attack), right)
		if shaped {
			b, ok := asProtobuf(attack)
			if !ok {
				return
			}
			field = slices.Concat(left, b)
		}
		seen := seenText(field)
		if v, err := rs.Inspect(t.Context(), jsonValue(seen), ""); err != nil || v.Decision != Deny {
			return // not an attack CRS sees as a JSON value
		}
		r := rand.New(rand.NewPCG(uint64(depth), uint64(num)))
		req := grpcAttackCall(field, protowire.Number(1+num%30), 1+int(depth%6), gz, r)
		v, err := rs.Inspect(t.Context(), req, "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != Deny {
			t.Fatalf("field %q (text %q): %v, score %d, rules %v; want deny", field, seen, v.Decision, v.AnomalyScore, v.RuleIDs())
		}
	})
}

// TestGRPCRawNamesOnlyFromTheBody: rule 99105 keeps the rules of paranoia
// level 2 and above off the ".raw" arguments of gRPC messages only; a query
// or form argument of such a name is inspected as any other.
func TestGRPCRawNamesOnlyFromTheBody(t *testing.T) {
	rs := testRuleSet(t)
	const specials = "a(b)c(d)e(f)g(h)i(j)k(l)m(n)o"
	score := func(r Request) int {
		t.Helper()
		v, err := rs.Inspect(t.Context(), r, profPL2)
		if err != nil {
			t.Fatal(err)
		}
		return v.AnomalyScore
	}
	call := grpcCall(grpctest.String(1, "users/42"), "")
	want := score(withURI(call, "/pkg.Svc/Method?q="+specials))
	if want == 0 {
		t.Fatalf("%q scores 0 at PL2: pick a value the level 2 rules flag", specials)
	}
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"query of a gRPC call", withURI(call, "/pkg.Svc/Method?grpc.1.raw="+specials)},
		{"form", send("POST", "HTTP/1.1", "/pkg.Svc/Method", formCT, "grpc.1.raw="+specials)},
	} {
		if got := score(tc.req); got != want {
			t.Errorf("%s: score %d, want %d as for any argument", tc.name, got, want)
		}
	}
}

func withURI(r Request, uri string) Request {
	r.URI = uri
	return r
}

// TestGRPCBinaryFieldExclusion: the text of random bytes holds strings CRS
// flags (4 KiB of them are mostly denied at PL1, README), and an exclusion
// of the field's ".raw" argument lets a service take such data.
func TestGRPCBinaryFieldExclusion(t *testing.T) {
	blob := make([]byte, 16<<10)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	call := grpcCall(grpctest.Message(grpctest.String(1, "uploads/cat.jpg"), grpctest.String(3, string(blob))), "")
	excl, err := Compile(Profile{Exclusions: []Exclusion{{Tags: []string{"OWASP_CRS"}, Targets: []string{"ARGS:grpc.3.raw"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rs   *RuleSet
		want Decision
	}{{testRuleSet(t), Deny}, {excl, Allow}} {
		v, err := tc.rs.Inspect(t.Context(), call, "")
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != tc.want {
			t.Errorf("%v, score %d, rules %v; want %v", v.Decision, v.AnomalyScore, v.RuleIDs(), tc.want)
		}
	}
}
