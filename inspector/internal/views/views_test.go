package views

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestViews(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        []View
	}{
		{"b64", b64("' or 1=1--"), []View{{"v:b64", "' or 1=1--"}}},
		{"b64url", base64.RawURLEncoding.EncodeToString([]byte("<svg/onload=alert(1)>??")), []View{{"v:b64", "<svg/onload=alert(1)>??"}}},
		{"b64 padded", b64("cat /etc/passwd"), []View{{"v:b64", "cat /etc/passwd"}}},
		{"b64 mostly printable", b64("id;\x01uname -a"), []View{{"v:b64", "id; uname -a"}}},
		{"url2", "%3Cscript%3E", []View{{"v:url2", "<script>"}}},
		{"url2 keeps +", "a+b%27", []View{{"v:url2", "a+b'"}}},
		{"u", "%u003cscript%U003E", []View{{"v:u", "<script>"}}},
		{"nfkc", "＜ｓｃｒｉｐｔ＞", []View{{"v:nfkc", "<script>"}}},
		{"html", "&lt;script&gt;&#x27;", []View{{"v:html", "<script>'"}}},
		{"nested b64 of url", b64("%27%20or%201%3D1--"), []View{{"v:b64", "%27%20or%201%3D1--"}, {"v:b64:url2", "' or 1=1--"}}},
		{"url of html", "%26lt%3Bb%26gt%3B", []View{{"v:url2", "&lt;b&gt;"}, {"v:url2:html", "<b>"}}},
		{"depth bound", b64(b64(b64("' or 1=1--"))), []View{{"v:b64", b64(b64("' or 1=1--"))}, {"v:b64:b64", b64("' or 1=1--")}}},
		{"same text once", "%2527", []View{{"v:url2", "%27"}, {"v:url2:url2", "'"}}},

		// No view: plain text, tokens, ids, binary.
		{"plain", "hello world", nil},
		{"short b64", b64("<b>"), nil},
		{"jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", nil},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000", nil},
		{"hex", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", nil},
		{"digits", "12345678901234567890", nil},
		{"binary b64", base64.StdEncoding.EncodeToString([]byte{0x89, 'P', 'N', 'G', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 1}), nil},
		{"random id", "AKIAIOSFODNN7EXAMPLE", nil},
		{"word", "internationalization", nil},
		{"mixed alphabets", "abc+def_ghijklmnop", nil},
		{"nfc accents", "Café crème naïve", nil},
		{"lone percent", "100% sure", nil},
		{"ampersand", "fish & chips", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewDecoder(Budget).Views(nil, "v", tc.value)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestRawViews: a cookie's or header's value was never decoded, so its
// first percent decoding is form decoding ('+' a space), and base64 with a
// literal '+' still gets its view.
func TestRawViews(t *testing.T) {
	plusB64 := b64("<svg onload=alert(1)>?")
	require.Contains(t, plusB64, "+", "the case needs base64 with '+'")
	padded := strings.ReplaceAll(plusB64, "=", "%3D")
	for _, tc := range []struct {
		name, value string
		want        []View
	}{
		{"form", "a+b%27", []View{{"v:url2", "a b'"}}},
		{"sentence", "%22it%27s%22+a+(test)", []View{{"v:url2", `"it's" a (test)`}}},
		{"encoded plus stays", "a%2Bb%27", []View{{"v:url2", "a+b'"}}},
		{"plus alone", "a+b", nil},
		{"base64 with plus, padding encoded", padded, []View{{"v:url2", strings.ReplaceAll(plusB64[:len(plusB64)-2], "+", " ") + "=="}, {"v:url2:b64", "<svg onload=alert(1)>?"}}},
		{"base64 with plus", plusB64, []View{{"v:b64", "<svg onload=alert(1)>?"}}},
		{"nested", b64("%27%20or%201%3D1--"), []View{{"v:b64", "%27%20or%201%3D1--"}, {"v:b64:url2", "' or 1=1--"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewDecoder(Budget).RawViews(nil, "v", tc.value)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestViewsBounds(t *testing.T) {
	d := NewDecoder(20)
	got := d.Views(nil, "a", b64("0123456789 0123456789")) // 21 bytes decoded
	require.Empty(t, got, "over the budget")
	got = d.Views(nil, "a", "%41%42")
	require.Equal(t, []View{{"a:url2", "AB"}}, got)
	require.Empty(t, NewDecoder(Budget).Views(nil, "a", strings.Repeat("%41", MaxValue/3+1)), "value over MaxValue")
}

// TestViewsSkipped: values a bound left without views are counted, those
// no decoding applies to are not.
func TestViewsSkipped(t *testing.T) {
	long := func(unit string) string { return strings.Repeat(unit, MaxValue/len(unit)+1) }
	for _, tc := range []struct {
		name   string
		budget int
		values []string
		want   Skipped
	}{
		{"within bounds", Budget, []string{b64("' or 1=1--"), "%41%42"}, Skipped{}},
		{"long b64 text", Budget, []string{b64(long("select * from t; "))}, Skipped{OverMaxValue: 1, Longest: len(b64(long("select * from t; ")))}},
		{"long percent", Budget, []string{long("a%41")}, Skipped{OverMaxValue: 1, Longest: len(long("a%41"))}},
		{"long entity", Budget, []string{long("abc ") + "&lt;"}, Skipped{OverMaxValue: 1, Longest: len(long("abc ")) + 4}},
		{"long full-width", Budget, []string{long("ａ")}, Skipped{OverMaxValue: 1, Longest: len(long("ａ"))}},
		{"long plain text", Budget, []string{long(`Lorem ipsum, "dolor" sit amet & more: 100% <fine>. `)}, Skipped{}},
		{"long b64 binary", Budget, []string{base64.StdEncoding.EncodeToString([]byte(long("\x89PNG\x00\x01\x02\xff")))}, Skipped{}},
		{"long accents NFC", Budget, []string{long("Café crème naïve ")}, Skipped{}},
		{"budget spent", 20, []string{"%41%42", b64("0123456789 0123456789"), b64("abcdefghijklmnopqrstu")}, Skipped{OverBudget: 2, BudgetViewBytes: 42}},
		{"second view over", 12, []string{b64("%41%42%43%44")}, Skipped{OverBudget: 1, BudgetViewBytes: 4}},
		{"b64 x3", Budget, []string{b64(b64(b64("' or 1=1--")))}, Skipped{OverDepth: 1}},
		{"url x3", Budget, []string{"%25252527%2525253Cscript%2525253E"}, Skipped{OverDepth: 1}},
		{"b64 of url x2", Budget, []string{b64("%2527 or 1=1--")}, Skipped{OverDepth: 1}},
		{"html of url of b64", Budget, []string{"%26lt%3B" + b64("<script>alert(1)</script>") + "%26gt%3B"}, Skipped{}},
		{"nfkc of html x2", Budget, []string{"＆amp;lt;b＆amp;gt;"}, Skipped{OverDepth: 1}},
		{"two values, one deep twice", Budget, []string{b64(b64(b64("' or 1=1--"))), "%252527 %2525253C", "%2527"}, Skipped{OverDepth: 2}},
		{"b64 x2 ends plain", Budget, []string{b64(b64("' or 1=1--")), "%2527"}, Skipped{}},
		{"depth 2 decodes to nothing new", Budget, []string{"%2526%2526"}, Skipped{}},
		// url2:nfkc "00%30" decodes to "000", which the later nfkc:url2 is.
		{"deeper text made by another branch", Budget, []string{"00%³0%00"}, Skipped{}},
		{"over budget before the depth", 12, []string{b64(b64(b64("' or 1=1--")))}, Skipped{OverBudget: 1, BudgetViewBytes: 24}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(tc.budget)
			for _, v := range tc.values {
				d.Views(nil, "v", v)
			}
			require.Equal(t, tc.want, d.Skipped())
			require.Equal(t, tc.want != Skipped{}, d.Skipped().Any())
		})
	}
}

// TestDecodable: Decodable agrees with the decoders on values of every
// kind, base64 text whose runes straddle its decoding chunks included.
func TestDecodable(t *testing.T) {
	values := []string{"", "plain", "100% sure", "fish & chips", "R&D", "&", "&#", "&#;", "&#x;", "&#x", "&#xg", "&#1", "&amp", "&ampx", "&notit;",
		"&" + strings.Repeat("a", 100), "&" + strings.Repeat("a", 63) + "&lt;", strings.Repeat("&lt", 40), "&CounterClockwiseContourIntegral;",
		"%u00", "%u0041", "%4", "%41", "a%", "％４１", "Café", "ﬁne", b64("\x00abcdefghijkl"), b64(strings.Repeat("é", 5000)),
		b64(strings.Repeat("ab€", 3000)), b64(strings.Repeat("a€", 3000) + "\xe2\x82"), b64(strings.Repeat("\x01\x02abcdefgh", 1000)),
		base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("ok?>", 2000))), b64("hello") + "x"}
	for _, at := range []int{0, 1, 4095, 4096, 4097, 8190} { // HTML pieces of 4 KiB
		for _, ref := range []string{"&lt;", "&#60;", "&#x3c", "&amp", "&" + strings.Repeat("b", 70) + "&lt", "&" + strings.Repeat("z", 80)} {
			values = append(values, strings.Repeat("&x ", at/3)+strings.Repeat(".", at%3)+ref+" "+strings.Repeat("tail ", 2000))
		}
	}
	for _, u := range []string{"€", "😀", "é"} {
		for pad := range 4 {
			values = append(values, b64(strings.Repeat("x", 3071-pad)+strings.Repeat(u, 2000)))
		}
	}
	for _, s := range values {
		require.Equal(t, len(NewDecoder(1<<30).Views(nil, "v", s)) > 0, Decodable(s), "%.80q", s)
	}
}

func TestRule(t *testing.T) {
	require.Empty(t, Rule(1, Options{}))
	require.Equal(t, "SecRule REQUEST_LINE \"@meshwafBodyArgs views,file-names\" \"id:7,phase:2,pass,nolog,t:none\"\n", Rule(7, Options{Views: true, FileNames: true}))
	_, err := newOperator(pluginOpts("views,bogus"))
	require.ErrorContains(t, err, "bogus")
}

// FuzzViews: views are bounded by the budget, never repeat, are valid
// UTF-8 when base64 made them, and chain at most MaxDepth decodings; a
// value is counted over the depth exactly when a view at MaxDepth decodes
// to a text that is none of the views.
func FuzzViews(f *testing.F) {
	for _, s := range []string{b64("' or 1=1--"), "%253Cscript%253E", "%u003c", "＜ｓ＞", "&lt;b&gt;", "plain",
		b64(b64(b64("' or 1=1--"))), "%25252527", b64("%2527%253C"), "＆amp;lt;", "%2526%2526", b64(b64("%u003c")),
		"a+b%27", strings.ReplaceAll(b64("<svg onload=alert(1)>?"), "=", "%3D"), strings.ReplaceAll(b64(b64("<svg onload=alert(1)>?")), "=", "%3D")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkViews(t, s, (*Decoder).Views)
		checkViews(t, s, (*Decoder).RawViews)
	})
}

// checkViews asserts FuzzViews's invariants of one way of adding views.
func checkViews(t *testing.T, s string, views func(*Decoder, []View, string, string) []View) {
	t.Helper()
	const budget = 1 << 12
	d := NewDecoder(budget)
	vs := views(d, nil, "n", s)
	total := 0
	seen := map[string]bool{s: true}
	for _, v := range vs {
		total += len(v.Value)
		require.False(t, seen[v.Value], "repeated view %q", v.Value)
		seen[v.Value] = true
		require.LessOrEqual(t, strings.Count(v.Name, ":"), MaxDepth, v.Name)
		if strings.HasSuffix(v.Name, ":"+Base64) {
			require.True(t, utf8.ValidString(v.Value) && !strings.Contains(v.Value, "\x00"), "%q", v.Value)
		}
	}
	require.LessOrEqual(t, total, budget)
	unbounded := NewDecoder(1 << 30)
	all := views(unbounded, nil, "n", s)
	require.Equal(t, len(all) > 0, Decodable(s))
	deeper := false
	for _, v := range all {
		if strings.Count(v.Name, ":") < MaxDepth {
			continue
		}
		for _, dec := range decoders {
			if text, ok := dec.decode(v.Value); ok && text != v.Value && !slices.ContainsFunc(all, func(w View) bool { return w.Value == text }) {
				deeper = true
			}
		}
	}
	require.Equal(t, deeper, unbounded.Skipped().OverDepth == 1, "%q", all)
	require.Equal(t, len(all) > len(vs), d.Skipped().OverBudget == 1, "%d views of %d", len(vs), len(all))
}
