package inspector

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// multipartBomb is n one-byte form fields in the boundary of multipartCT
// (10,000 fields make the 869 KB body of ~90 bytes a part).
func multipartBomb(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"field%05d\"\r\n\r\n1\r\n", i)
	}
	b.WriteString("------meshwafBoundary7MA4YWxk--\r\n")
	return b.String()
}

// multipartHeaderBomb is one form field with n distinct part headers.
func multipartHeaderBomb(n int) string {
	var b strings.Builder
	b.WriteString("------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"a\"\r\n")
	for i := range n {
		fmt.Fprintf(&b, "X-H%d: 1\r\n", i)
	}
	b.WriteString("\r\n1\r\n------meshwafBoundary7MA4YWxk--\r\n")
	return b.String()
}

// xmlLeaves is a root element holding n leaf elements of one character
// each (50,000 leaves make the 700 KB body). Its nodes: the root,
// and an element and a text per leaf.
func xmlLeaves(n int) string {
	var b strings.Builder
	b.WriteString("<r>")
	for i := range n {
		fmt.Fprintf(&b, "<e%d>1</e%d>", i%10, i%10)
	}
	b.WriteString("</r>")
	return b.String()
}

// bodyGuardAllocMax is the most a check of a body refused by the count may
// allocate, whatever the body's size (the README's bound): the count
// allocates nothing, and the check is one without a body.
const bodyGuardAllocMax = 2 << 20

// refusedCheckAllocMax is bodyGuardAllocMax, or 8 MiB under the race
// detector, which drops sync.Pool items at random: a check then allocates
// a fresh Coraza transaction now and then (2.5-3.6 MB measured). Either is
// far below what an unguarded bomb allocates (over 1 GB).
func refusedCheckAllocMax() uint64 {
	if raceEnabled {
		return 8 << 20
	}
	return bodyGuardAllocMax
}

// allocated returns the bytes f allocates in a steady state: the least of
// three runs after one to warm up (the @rx DFAs build their states on first
// use, within their own bound, and a background allocation of the runtime
// or of an earlier test's cleanup must not count as f's).
func allocated(f func()) uint64 {
	f()
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// TestBodyArgumentsLimit: a multipart or XML body with more parts or nodes
// than argumentsLimit is denied by the arguments guard before Coraza parses
// it, in a profile that allows arguments over the limit too (Coraza's
// multipart and XML processors cannot stop at the limit), and the check
// allocates at most bodyGuardAllocMax.
func TestBodyArgumentsLimit(t *testing.T) {
	rs := testRuleSet(t)
	tests := []struct {
		name string
		ct   string
		body string
	}{
		{"multipart-10000-parts", multipartCT, multipartBomb(10000)},
		{"multipart-1001-parts", multipartCT, multipartBomb(DefaultArgumentsLimit + 1)},
		{"multipart-one-part-5000-headers", multipartCT, multipartHeaderBomb(5000)},
		{"multipart-one-part-9999-short-headers", multipartCT, mpBoundary + "\r\n" + strings.Repeat("A:\r\n", 9999) + "\r\n1\r\n" + mpBoundary + "--\r\n"},
		{"multipart-700KB-header-then-1001-parts", multipartCT, mpBoundary + "\r\nX-Long: " + strings.Repeat("a", 700<<10) + "\r\n\r\n1\r\n" + multipartBomb(DefaultArgumentsLimit+1)},
		{"xml-50000-elements", "application/xml", xmlLeaves(50000)},
		{"xml-one-element-20000-attributes", "text/xml", "<r " + strings.Repeat("a ", 20000) + "/>"},
		{"xml-1002-nodes", "application/xml", `<r id="x">` + xmlLeaves(500)[3:]},
	}
	for _, tc := range tests {
		for _, prof := range []string{"", profAllowArgs} {
			t.Run(tc.name+"/"+profileOf(t, rs, prof).Name, func(t *testing.T) {
				r := send("POST", "HTTP/1.1", "/upload", tc.ct, tc.body)
				v := inspect(t, rs, prof, r)
				require.Equal(t, Deny, v.Decision, "rules %v", v.RuleIDs())
				require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)
				// Again, once the first check filled the rule set's shared
				// caches (the @rx DFA states, bounded on their own).
				alloc := allocated(func() { inspect(t, rs, prof, r) })
				t.Logf("%d byte body: %d bytes allocated", len(tc.body), alloc)
				require.LessOrEqual(t, alloc, refusedCheckAllocMax(),
					"a %d byte body allocated %d bytes", len(tc.body), alloc)
			})
		}
	}

	// At the limit exactly, the body is parsed and inspected as before.
	atLimit := []struct {
		name string
		ct   string
		body string
	}{
		{"multipart-1000-parts", multipartCT, multipartBomb(DefaultArgumentsLimit)},
		{"xml-1000-nodes", "application/xml", `<r id="x">` + xmlLeaves(499)[3:]},
	}
	for _, tc := range atLimit {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", send("POST", "HTTP/1.1", "/upload", tc.ct, tc.body))
			require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
			require.Empty(t, v.Matches)
		})
	}
}

// TestBodyArgumentsLimitKeepsOtherFindings: a body refused unparsed still
// has the rest of the request inspected (phase 2 runs without the body),
// and detect mode reports the guard.
func TestBodyArgumentsLimitKeepsOtherFindings(t *testing.T) {
	rs := testRuleSet(t)
	r := send("POST", "HTTP/1.1", seedSQLiURI, multipartCT, multipartBomb(DefaultArgumentsLimit+1))
	v := inspect(t, rs, "", r)
	require.Equal(t, Deny, v.Decision)
	require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)
	require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "the query's SQLi is still found: %v", v.RuleIDs())

	v = inspect(t, rs, profDetect, send("POST", "HTTP/1.1", "/upload", "application/xml", xmlLeaves(2000)))
	require.Equal(t, Detect, v.Decision)
	require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)
}

const mpBoundary = "------meshwafBoundary7MA4YWxk" // the delimiter of multipartCT

// bodyNodeCases are the pre-scan's cases, also the fuzz seeds.
var bodyNodeCases = []struct {
	name, proc, ct, body string
	want                 int
}{
	{"multipart/fields", "MULTIPART", multipartCT, multipart("a", "1", "b", "2", "c", "3"), 3},
	{"multipart/file", "MULTIPART", multipartCT, mpBoundary + "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n" + mpBoundary + "--\r\n", 1},
	{"multipart/five-headers", "MULTIPART", multipartCT, mpBoundary + "\r\nContent-Disposition: form-data; name=\"a\"\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n1\r\n" + mpBoundary + "--\r\n", 3},
	{"multipart/repeated-header", "MULTIPART", multipartCT, mpBoundary + "\r\nContent-Disposition: form-data; name=\"a\"\r\nA: 1\r\nA: 2\r\nA: 3\r\n\r\n1\r\n" + mpBoundary + "--\r\n", 2},
	{"multipart/quoted-boundary", "MULTIPART", `multipart/form-data; boundary="a b:c"`, "--a b:c\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--a b:c\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--a b:c--\r\n", 2},
	{"multipart/upper-case-type", "multipart", "MULTIPART/FORM-DATA; BOUNDARY=xY", "--xY\r\n\r\n1\r\n--xY\r\n\r\n2\r\n--xY--\r\n", 2},
	{"multipart/lf-only", "MULTIPART", "multipart/form-data; boundary=x", "--x\nContent-Disposition: form-data; name=\"a\"\n\n1\n--x\n\n2\n--x--\n", 2},
	{"multipart/mixed", "MULTIPART", "multipart/mixed; boundary=x", "--x\r\n\r\n1\r\n--x\r\n\r\n2\r\n--x--\r\n", 2},
	{"multipart/nested-is-one-part", "MULTIPART", "multipart/form-data; boundary=x", "--x\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n--y\r\n\r\n1\r\n--y\r\n\r\n2\r\n--y--\r\n--x--\r\n", 1},
	{"multipart/preamble-and-epilogue", "MULTIPART", "multipart/form-data; boundary=x", "--x-not\r\n--xx\r\n\r\n--x\r\n\r\n1\r\n--x--\r\n--x\r\n\r\n2\r\n", 2}, // the epilogue's delimiter counts
	{"multipart/whitespace-after-delimiter", "MULTIPART", "multipart/form-data; boundary=x", "--x \t\r\n\r\n1\r\n--x\r\n\r\n2\r\n--x--\r\n", 2},
	{"multipart/no-boundary", "MULTIPART", "multipart/form-data", "--\r\n\r\n1\r\n----\r\n", 1}, // mime/multipart reads no part
	{"multipart/bad-content-type", "MULTIPART", "multipart/form-data; boundary=", "--\r\n\r\n1\r\n", 0},
	{"multipart/not-multipart", "MULTIPART", "text/plain; boundary=x", "--x\r\n\r\n1\r\n--x--\r\n", 0},
	{"multipart/goes-on-past-a-malformed-part", "MULTIPART", "multipart/form-data; boundary=x", "--x\r\n\r\n1\r\n--x\r\nno colon\r\n\r\n2\r\n--x\r\n\r\n3\r\n--x--\r\n", 3},
	{"multipart/delimiter-in-headers", "MULTIPART", "multipart/form-data; boundary=x", "--x\r\nA: 1\r\n--x\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n1\r\n--x--\r\n", 3},
	{"multipart/content-not-delimiter", "MULTIPART", "multipart/form-data; boundary=x", "--x\r\n\r\n--xy\r\n --x\r\n--x--\r\n", 1},
	{"multipart/unterminated-headers", "MULTIPART", "multipart/form-data; boundary=x", "--x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1", 3},
	{"xml/elements-text-attrs", "XML", "application/xml", `<a x="1" y='2'><b>t</b><c/> <d>  </d></a>`, 7},
	{"xml/non-strict-attrs", "XML", "application/xml", `<a b c=d rs="f">`, 4},
	{"xml/comment-pi-doctype-cdata", "XML", "text/xml", `<?xml version="1.0"?><!DOCTYPE a [<!ENTITY rs "<b>">]><a><!-- <b>1</b> --><![CDATA[<c>2</c>]]></a>`, 5},
	{"xml/blank-cdata", "XML", "text/xml", `<a><![CDATA[ ]]></a>`, 1},
	{"xml/entities", "XML", "text/xml", `<a>&nbsp;&lt;&unknown;</a>`, 2},
	{"xml/goes-on-past-an-error", "XML", "text/xml", `<a>1</a>]]><b>2</b>`, 5},
	{"xml/unclosed", "XML", "text/xml", `<a><b>1`, 3},
	{"other/json", "JSON", "application/json", `[1,2,3]`, 0},
	{"other/urlencoded", "URLENCODED", formCT, `a=1&b=2`, 0},
	{"other/none", "", "multipart/form-data; boundary=x", "--x\r\n\r\n1\r\n--x--\r\n", 0},
}

func TestCountBodyNodes(t *testing.T) {
	for _, tc := range bodyNodeCases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, countBodyNodes(tc.proc, tc.ct, []byte(tc.body), 1000))
			require.Equal(t, min(tc.want, 2), countBodyNodes(tc.proc, tc.ct, []byte(tc.body), 1), "capped at limit+1")
		})
	}
}

// TestCountBodyNodesBombs: counting stops at limit+1, so refusing a bomb
// costs little whatever its size.
func TestCountBodyNodesBombs(t *testing.T) {
	for _, tc := range []struct{ name, proc, ct, body string }{
		{"multipart", "MULTIPART", multipartCT, multipartBomb(10000)},
		{"xml", "XML", "application/xml", xmlLeaves(50000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			var n int
			alloc := allocated(func() { n = countBodyNodes(tc.proc, tc.ct, body, DefaultArgumentsLimit) })
			require.Equal(t, DefaultArgumentsLimit+1, n)
			require.Less(t, alloc, uint64(4<<10), "pre-scan of a %d byte body allocated %d bytes", len(body), alloc)
		})
	}
}
