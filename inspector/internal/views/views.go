// Package views decodes argument values CRS never decodes (base64, a second
// URL decoding, %uXXXX, full-width Unicode, HTML entities) into extra
// arguments, "decoded views", so that every rule reading ARGS inspects the
// decoded text too. It also holds the Coraza operator that adds, at the
// start of phase 2, the views of body arguments and the XML attribute
// values and multipart file names as arguments (operator.go).
package views

import (
	"encoding/base64"
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Limits of the decoding.
const (
	// MaxDepth is how many decodings are chained (a view of a view). A
	// value with a view at this depth that would still decode is counted
	// (Skipped.OverDepth): its innermost text is not inspected.
	MaxDepth = 2
	// MaxValue is the longest value decoded; longer ones get no view.
	MaxValue = 64 << 10
	// Budget is the most bytes of views one request phase adds.
	Budget = 256 << 10
	// MinBase64 is the shortest base64 text decoded (9 bytes decoded).
	MinBase64 = 12
	// printableShare is the share of printable runes base64 text must decode to.
	printableShare = 0.9
)

// Suffixes of the views' argument names: "<name>:<suffix>".
const (
	Base64 = "b64"  // base64 or base64url of mostly printable UTF-8
	URL    = "url2" // percent-encoded once more (%XX)
	Uni    = "u"    // %uXXXX (and %XX with it)
	NFKC   = "nfkc" // Unicode compatibility forms (full-width) folded
	HTML   = "html" // HTML entities
)

// View is one decoded view of a value.
type View struct {
	Name  string // the argument name: the value's name, ":", the suffixes
	Value string
}

// Decoder adds the views of values, within a budget of bytes it keeps
// across calls (one Decoder per request phase), and counts the values it
// left views out for because of a bound.
type Decoder struct {
	left    int
	skipped Skipped
}

// Skipped counts the values that did not get every view they would have
// had without the bounds of the decoding.
type Skipped struct {
	// OverMaxValue counts values longer than MaxValue to which a decoding
	// applies (Decodable); Longest is the longest of them.
	OverMaxValue, Longest int
	// OverBudget counts values with a view left out because the budget
	// was spent; BudgetViewBytes is the bytes of the views left out.
	OverBudget, BudgetViewBytes int
	// OverDepth counts values with a view at MaxDepth that a decoding
	// would give one more, new view of.
	OverDepth int
}

// Add returns the sum of s and o (Longest: the larger).
func (s Skipped) Add(o Skipped) Skipped {
	return Skipped{OverMaxValue: s.OverMaxValue + o.OverMaxValue, Longest: max(s.Longest, o.Longest),
		OverBudget: s.OverBudget + o.OverBudget, BudgetViewBytes: s.BudgetViewBytes + o.BudgetViewBytes,
		OverDepth: s.OverDepth + o.OverDepth}
}

// Any reports whether a value was skipped.
func (s Skipped) Any() bool { return s.OverMaxValue > 0 || s.OverBudget > 0 || s.OverDepth > 0 }

// NewDecoder returns a decoder that adds at most budget bytes of views.
func NewDecoder(budget int) *Decoder { return &Decoder{left: budget} }

// Skipped returns what d left out so far.
func (d *Decoder) Skipped() Skipped { return d.skipped }

// Views appends to out the views of value (named name), and the views of
// those up to MaxDepth decodings, skipping any that repeats the value or an
// earlier view of it. A value longer than MaxValue gets no view; one a
// decoding applies to is counted (Skipped.OverMaxValue). A view that does
// not fit in what is left of the budget is left out and its value counted
// (Skipped.OverBudget). A value with a view at MaxDepth that one more
// decoding would turn into a new text is counted (Skipped.OverDepth); that
// text is not made.
func (d *Decoder) Views(out []View, name, value string) []View {
	return d.add(out, name, value, false)
}

// RawViews is Views for a value as the client sent it, which nothing
// decoded before meshwaf (a cookie or a header): its first percent
// decoding is form decoding, '+' a space, as Coraza decodes query and form
// arguments ('+' kept would show CRS's multiMatch rules a '+'-joined text
// no argument ever holds). Base64 text with a literal '+' still gets its
// view: the percent decoding that keeps '+' is tried as base64 too
// ("<name>:url2:b64").
func (d *Decoder) RawViews(out []View, name, value string) []View {
	return d.add(out, name, value, true)
}

func (d *Decoder) add(out []View, name, value string, raw bool) []View {
	if !candidate(value) {
		return out
	}
	if len(value) > MaxValue {
		if Decodable(value) {
			d.skipped.OverMaxValue++
			d.skipped.Longest = max(d.skipped.Longest, len(value))
		}
		return out
	}
	start := len(out)
	var b bounded
	out = d.views(out, start, name, value, 1, raw, &b)
	if b.overBytes > 0 {
		d.skipped.OverBudget++
		d.skipped.BudgetViewBytes += b.overBytes
	}
	if b.deepest && deeper(out[start:], len(name)) {
		d.skipped.OverDepth++
	}
	return out
}

// bounded is what the bounds left out of one value's views.
type bounded struct {
	overBytes int  // bytes of the views left out for the budget
	deepest   bool // a view at MaxDepth may decode further (candidate)
}

// deeper reports whether a view of vs at MaxDepth (named after a value's
// name of nameLen bytes) decodes to a text that is none of vs: the view
// views would add one level deeper. At most one decoding per decoder and
// view, none kept.
func deeper(vs []View, nameLen int) bool {
	for _, v := range vs {
		if strings.Count(v.Name[nameLen:], ":") < MaxDepth || !candidate(v.Value) {
			continue
		}
		for _, dec := range decoders {
			if t, ok := dec.decode(v.Value); ok && t != v.Value && !seen(vs, t) {
				return true
			}
		}
	}
	return false
}

// views adds the views of value at depth; raw: value is as the client sent
// it (RawViews), at depth 1 only.
func (d *Decoder) views(out []View, start int, name, value string, depth int, raw bool, b *bounded) []View {
	for _, dec := range decoders {
		decode := dec.decode
		if raw && dec.suffix == URL {
			decode = decodeForm
		}
		text, ok := decode(value)
		if !ok || text == value || seen(out[start:], text) {
			continue
		}
		vn := name + ":" + dec.suffix
		if !d.fits(text, b) {
			continue
		}
		out = append(out, View{Name: vn, Value: text})
		if raw && dec.suffix == URL && strings.Contains(value, "+") {
			out = d.plusBase64(out, start, vn, value, b)
		}
		switch {
		case !candidate(text):
		case depth < MaxDepth:
			out = d.views(out, start, vn, text, depth+1, false, b)
		default:
			b.deepest = true
		}
	}
	return out
}

// fits takes text's bytes from the budget when they fit, and counts them
// as left out when they do not.
func (d *Decoder) fits(text string, b *bounded) bool {
	if len(text) > d.left {
		b.overBytes += len(text)
		return false
	}
	d.left -= len(text)
	return true
}

// plusBase64 adds, for a raw value with '+', the base64 view of its
// percent decoding that keeps '+' (named after the form view vn): form
// decoding turned the base64 alphabet's '+' into spaces.
func (d *Decoder) plusBase64(out []View, start int, vn, value string, b *bounded) []View {
	kept, ok := decodePercent(value)
	if !ok {
		return out
	}
	text, ok := decodeBase64(kept)
	if !ok || seen(out[start:], text) || !d.fits(text, b) {
		return out
	}
	out = append(out, View{Name: vn + ":" + Base64, Value: text})
	if candidate(text) {
		b.deepest = true // the view is at depth MaxDepth
	}
	return out
}

func seen(vs []View, text string) bool {
	for _, v := range vs {
		if v.Value == text {
			return true
		}
	}
	return false
}

var decoders = []struct {
	suffix string
	decode func(string) (string, bool)
}{
	{Base64, decodeBase64},
	{URL, decodePercent},
	{Uni, decodeUni},
	{NFKC, foldNFKC},
	{HTML, unescapeHTML},
}

// candidate reports whether any decoder may apply to s: it has '%', '&',
// a non-ASCII byte, or is long enough for base64. Cheap, allocation-free.
func candidate(s string) bool {
	if len(s) >= MinBase64 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c == '&' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// decodeBase64 decodes s when it is only base64 or base64url (padding at
// the end alone), at least MinBase64 long, not only hex digits, and decodes to valid UTF-8 of which at
// least printableShare of the runes are printable (the others become
// spaces; NUL never passes).
func decodeBase64(s string) (string, bool) {
	body, enc, ok := base64Text(s)
	if !ok {
		return "", false
	}
	raw, err := enc.DecodeString(body)
	if err != nil || !utf8.Valid(raw) {
		return "", false
	}
	return printable(string(raw))
}

// base64Text returns s without its padding and the encoding its alphabet
// is, when decodeBase64 tries to decode s.
func base64Text(s string) (string, *base64.Encoding, bool) {
	body := strings.TrimRight(s, "=")
	if len(body) < MinBase64 || len(s)-len(body) > 2 {
		return "", nil, false
	}
	std, url, hexOnly := false, false, true
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		case 'g' <= c && c <= 'z', 'G' <= c && c <= 'Z':
			hexOnly = false
		case c == '+' || c == '/':
			std, hexOnly = true, false
		case c == '-' || c == '_':
			url, hexOnly = true, false
		default:
			return "", nil, false
		}
	}
	if hexOnly || std && url {
		return "", nil, false
	}
	if url {
		return body, base64.RawURLEncoding, true
	}
	return body, base64.RawStdEncoding, true
}

// printable returns s with non-printable runes (but tab, CR, LF) as spaces,
// when at least printableShare of its runes are printable and it has no NUL.
func printable(s string) (string, bool) {
	total, bad := 0, 0
	for _, r := range s {
		total++
		if r == 0 {
			return "", false
		}
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			bad++
		}
	}
	if total == 0 || float64(total-bad) < printableShare*float64(total) {
		return "", false
	}
	if bad == 0 {
		return s, true
	}
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return ' '
		}
		return r
	}, s), true
}

// decodeForm decodes every %XX of s and every '+' as a space, when s has a
// %XX; other '%' stay.
func decodeForm(s string) (string, bool) { return unpercent(s, true) }

// decodePercent decodes every %XX of s ('+' stays); other '%' stay.
func decodePercent(s string) (string, bool) { return unpercent(s, false) }

// unpercent decodes every %XX of s, and '+' as a space with plusSpace;
// it reports false when s has no %XX.
func unpercent(s string, plusSpace bool) (string, bool) {
	if !strings.Contains(s, "%") {
		return "", false
	}
	var b strings.Builder
	changed := false
	for i := 0; i < len(s); i++ {
		switch {
		case hexAt(s, i):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			changed = true
		case plusSpace && s[i] == '+':
			b.WriteByte(' ')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), changed
}

// decodeUni decodes %uXXXX (and %XX) of s when it has at least one %uXXXX.
func decodeUni(s string) (string, bool) {
	if !strings.Contains(s, "%u") && !strings.Contains(s, "%U") {
		return "", false
	}
	var b strings.Builder
	changed := false
	for i := 0; i < len(s); i++ {
		switch {
		case uniAt(s, i):
			r := rune(unhex(s[i+2]))<<12 | rune(unhex(s[i+3]))<<8 | rune(unhex(s[i+4]))<<4 | rune(unhex(s[i+5]))
			b.WriteRune(r)
			i += 5
			changed = true
		case hexAt(s, i):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(s[i])
		}
	}
	if !changed {
		return "", false
	}
	return b.String(), true
}

// hexAt reports a %XX at s[i].
func hexAt(s string, i int) bool {
	return i+2 < len(s) && s[i] == '%' && ishex(s[i+1]) && ishex(s[i+2])
}

// uniAt reports a %uXXXX at s[i].
func uniAt(s string, i int) bool {
	return i+5 < len(s) && s[i] == '%' && (s[i+1] == 'u' || s[i+1] == 'U') &&
		ishex(s[i+2]) && ishex(s[i+3]) && ishex(s[i+4]) && ishex(s[i+5])
}

// foldNFKC folds s to NFKC when it has non-ASCII text.
func foldNFKC(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			if norm.NFKC.IsNormalString(s) {
				return "", false
			}
			return norm.NFKC.String(s), true
		}
	}
	return "", false
}

// unescapeHTML decodes HTML entities of s.
func unescapeHTML(s string) (string, bool) {
	if !strings.Contains(s, "&") {
		return "", false
	}
	u := html.UnescapeString(s)
	return u, u != s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
