package inspector

import (
	"encoding/base64"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector/internal/views"
)

const (
	profAllowUndecoded = "allow-undecoded"
	profFullEval       = "full-evaluation"
)

// filler returns n bytes of ordinary prose.
func filler(n int) string {
	const s = "The quick brown fox jumps over the lazy dog, again and again. "
	return strings.Repeat(s, n/len(s)+1)[:n]
}

// randomBytes returns n bytes of pseudo-random binary data (a file upload).
func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestUndecodedViews: an encoded value that the decoded views leave
// undecoded because of a bound is denied by RuleUndecodedViews, unless the
// profile allows it, and is then counted in the verdict. Values no
// decoding applies to are never denied for their length.
func TestUndecodedViews(t *testing.T) {
	rs, err := Compile(Profile{}, Profile{Name: profAllowUndecoded, AllowUndecodedViews: true}, Profile{Name: profFullEval, Preselect: new(bool)})
	require.NoError(t, err)
	// Views of 5 × 48 KiB and the rest of the budget but 5 bytes: the
	// attack's view does not fit.
	padding := strings.Repeat("a="+qesc(b64(filler(48<<10)))+"&", 5) + "a=" + qesc(b64(filler(views.Budget-5*48<<10-5))) + "&"
	oversized := b64(filler(views.MaxValue) + " " + xssPayload)
	for _, tc := range []struct {
		name      string
		req       Request
		want      Decision // default profile
		guard     bool     // RuleUndecodedViews among the default profile's rules
		wantOpted Decision // allowUndecodedViews
		counted   UndecodedViews
	}{
		{name: "padding then b64 attack/form", req: send("POST", "HTTP/1.1", "/api/v1/notes", formCT, padding+"a="+qesc(b64(xssPayload))),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverBudget: 1, BudgetViewBytes: len(xssPayload)}},
		{name: "oversized b64 attack/json", req: send("POST", "HTTP/1.1", "/api/v1/docs", "application/json", `{"doc":"`+oversized+`"}`),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverValueLimit: 1, Longest: len(oversized)}},
		{name: "oversized b64 attack/header", req: get("HTTP/1.1", "/", "X-Data", oversized),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverValueLimit: 1, Longest: len(oversized)}},
		{name: "oversized url2 attack/query", req: get("HTTP/1.1", "/?q="+qesc(qesc(filler(views.MaxValue)+" "+sqliPayload))),
			// CRS's t:urlDecodeUni decodes it all the same.
			want: Deny, guard: true, wantOpted: Deny, counted: UndecodedViews{OverValueLimit: 1, Longest: len(qesc(filler(views.MaxValue) + " " + sqliPayload))}},
		// A third nested encoding: the views stop at base64 of the attack.
		{name: "b64 x3 sqli/query", req: get("HTTP/1.1", "/?q="+qesc(b64(b64(b64("' or 1=1--"))))),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverDepth: 1}},
		{name: "b64 x3 xss/json", req: send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"a":"`+b64(b64(b64(xssPayload)))+`"}`),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverDepth: 1}},
		{name: "b64 x3 sqli/header and cookie", req: get("HTTP/1.1", "/", "X-Data", b64(b64(b64(sqliPayload))), "Cookie", "s="+b64(b64(b64(sqliPayload)))),
			want: Deny, guard: true, wantOpted: Allow, counted: UndecodedViews{OverDepth: 2}},
		// CRS's rules catch five URL encodings on their own (920230, 941180).
		{name: "url x5 xss/query", req: get("HTTP/1.1", "/?q="+qesc(qesc(qesc(qesc(qesc(xssPayload)))))),
			want: Deny, guard: true, wantOpted: Deny, counted: UndecodedViews{OverDepth: 1}},
		{name: "b64 x2 text/json", req: send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"a":"`+b64(b64("Meeting notes: 100% done, see https://example.com/a?b=c"))+`"}`),
			want: Allow, wantOpted: Allow},
		{name: "large plain text/json", req: send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"text":"`+filler(200<<10)+` 100% done, fish & chips, Café crème."}`),
			want: Allow, wantOpted: Allow},
		{name: "large b64 binary upload/json", req: send("POST", "HTTP/1.1", "/api/v1/files", "application/json", `{"name":"photo.png","content":"`+base64.StdEncoding.EncodeToString(randomBytes(300<<10))+`"}`),
			want: Allow, wantOpted: Allow},
		{name: "b64 text within the budget/json", req: send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"a":"`+b64(filler(40<<10))+`","b":"`+b64(filler(40<<10))+`","c":"`+b64(filler(40<<10))+`"}`),
			want: Allow, wantOpted: Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", tc.req)
			require.Equal(t, tc.want, v.Decision, "rules %v", v.RuleIDs())
			require.Equal(t, tc.guard, v.UndecodedViews.Any(), "%+v", v.UndecodedViews)
			require.Equal(t, tc.guard, slices.Contains(v.RuleIDs(), RuleUndecodedViews), "rules %v", v.RuleIDs())
			if tc.guard {
				require.Equal(t, tc.counted, v.UndecodedViews)
			}
			full := inspect(t, rs, profFullEval, tc.req)
			require.Equal(t, v.RuleIDs(), full.RuleIDs(), "pre-selection")
			require.Equal(t, v.AnomalyScore, full.AnomalyScore, "pre-selection")

			opted := inspect(t, rs, profAllowUndecoded, tc.req)
			require.Equal(t, tc.wantOpted, opted.Decision, "rules %v %+v", opted.RuleIDs(), opted.Matches)
			require.NotContains(t, opted.RuleIDs(), RuleUndecodedViews)
			require.Equal(t, tc.counted, opted.UndecodedViews, "counted with the opt-out")
		})
	}
}
