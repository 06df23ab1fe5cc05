package inspector

import (
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/corazawaf/coraza-coreruleset/v4"
)

// Corroboration (Profile.Corroboration, on by default at paranoia level 1;
// off under CRSOnly) changes how some CRS rules score, without changing
// what they match:
//
//   - CRS rules that react to natural language and file names at paranoia
//     level 1 (held) still match, but add their score only when something
//     else corroborates them: 942190 and 941210 another rule of their
//     class (tx.sql_injection_score, tx.xss_score), 932230, 932235,
//     932250, 932260 and 932280 shell syntax in an inspected value (rule
//     CorroborationShell), 920120 (quotes
//     in a multipart file name, which fileNames inspects as an argument
//     for every CRS rule) when a corroborating attack rule below matched
//     (rule CorroborationFileName);
//   - paranoia-level-2 rules that matched no benign traffic in the tuning
//     corpus (direct) score at level 1;
//   - paranoia-level-2 rules that match attacks PL1 misses but also some
//     benign text (corroborating) score when at least two of them, of any
//     class, matched the request (rule CorroborationPL2);
//   - every other paranoia-level-2 rule is removed: it neither runs nor
//     scores.
//
// Every rule this adds is tagged meshwaf and meshwaf/corroboration, in
// FirstCorroborationID..LastCorroborationID (next to the rule pack's range).
const (
	FirstCorroborationID = 461000
	LastCorroborationID  = 461099

	ruleCorroborationLevel = 461000 // phase 1: detection paranoia level 2
	// CorroborationPL2 adds a critical score when two corroborating
	// paranoia-level-2 rules matched.
	CorroborationPL2 = 461010
	// CorroborationClass adds the held score of 942190 or 941210 when
	// another rule of its class matched (461020 + index in heldByClass).
	CorroborationClass = 461020
	// CorroborationFileName adds the held score of 920120 when a
	// corroborating paranoia-level-2 attack rule (93x, 94x) matched.
	CorroborationFileName = 461040
	// CorroborationShell adds the held score of 932235 or 932250 when an
	// inspected value holds shell syntax.
	CorroborationShell = 461030
	// FirstPromoted is the id of the first copy of a promotedPL2 rule
	// (FirstPromoted + its index).
	FirstPromoted = 461050
	// CorroborationToken adds the held score of a heldUnlessToken rule
	// (461070 + its index) when a value it reads is a single token.
	CorroborationToken = 461070
)

// Rule selections, from the tuning split of bench/detection's corpus
// (README "Detection"). Paranoia-level-2 rules only, none a chain: actions
// appended to a chain's first rule run when that rule alone matches
// (TestCorroborationNotChained).
var (
	// directPL2 matched attacks PL1 misses and no benign check (942390,
	// which "(or 6)" in the rule pack's benign tests matches, corroborates).
	// 942380 was one until generation 5's English prose ("execute the
	// following command"): 14 benign items, against 6 attack payloads it
	// caught alone ("order by 1--").
	directPL2 = []int{921151, 942400}
	// corroboratingPL2 matched attacks PL1 misses, and benign text alone
	// or with one another only rarely. 932236 was one until the rule
	// pack's command-injection rules: then it added 32 of 27,906
	// detections on the tuning split and 8 false positives, and at PL2 it
	// matched 345 benign checks. 942180 (a quote then ';': prose
	// punctuation) and 920271 (control characters in chat text) scored
	// directly until generation 4's held-out split showed those false
	// positives.
	corroboratingPL2 = []int{920230, 920271, 942180, 942330, 942370, 942380, 942390, 942470, 942480}
	// promotedPL2 are chained paranoia-level-2 rules that matched attacks
	// PL1 misses and no benign check: appended actions would run on their
	// first link alone, so each runs as a copy (FirstPromoted + index,
	// CRS's text with its paranoia-level-2 score made level 1) in place of
	// the removed original.
	promotedPL2 = []int{942130, 942521}
)

// sameEvidence maps a corroborating rule to another whose match it does
// not corroborate, as both read the same shape: 942390 ("' or <x>") and
// 942370 (classic probing: a quote, an operator, a quote) both match quoted
// alternatives in prose ("'apt search <words>' or 'aptitude search
// <words>'"); on the tuning split their pair alone was 16 false positives
// and no detection.
// 942180 (a quote, then an operator or ';') reads the same quotes.
var sameEvidence = map[int]int{942390: 942370, 942180: 942370}

// heldByClass are PL1 rules that score only with another rule of their
// class: their class score variable.
var heldByClass = []struct {
	id       int
	classVar string
}{{942190, "sql_injection_score"}, {941210, "xss_score"}}

// classVar is the CRS class score variable a rule adds to, for the
// classes of heldByClass.
func classVar(id int) string {
	switch id / 1000 {
	case 942:
		return "sql_injection_score"
	case 941:
		return "xss_score"
	}
	return ""
}

// heldFileName is CRS's check of multipart file names for quotes and
// semicolons.
const heldFileName = 920120

// heldByShell are PL1 command-injection rules that score only when an
// inspected value also holds shell syntax: 932235 and 932250 (a command
// name), 932230 (a command after a word boundary), 932260 (a command at
// the start of a value: "dpkg removes all of the package's files") and
// 932280 (brace expansion: "/etc/cron.{hourly,daily}"). On the tuning
// split the last three had no detection that another rule did not make.
var heldByShell = []int{932230, 932235, 932250, 932260, 932280}

// heldUnlessToken are PL1 rules that match names of OS files (930120) and
// of Unix shells (932160) anywhere in a value: prose names them ("edit
// /etc/fstab", "runs /bin/sh"), while a value that attacks with a name is
// the name itself ("/etc/passwd", "....//etc/shadow%00"). They score only
// when a value they read is a single token, once their own
// transformations are applied; whitespace inside a file name does not
// make an attack pass, as a path with a word after it is not that file
// (what follows a NUL does not count: it ends the name in C), except in a
// value that starts with a Windows drive or UNC path, where directory
// names have spaces ("C:\Program Files\...").
// A command line that names them ("cat /etc/passwd") is scored by the
// command-injection rules.
var heldUnlessToken = []int{930120, 932160}

// CorroborationOn reports whether p's scoring is corroborated: on by
// default at paranoia level 1. At higher levels, and when beforeCRS sets a
// paranoia level itself, CRS's own scoring is kept.
func (p Profile) CorroborationOn() bool {
	return on(p.Corroboration) && p.ParanoiaLevel <= 1 && !strings.Contains(strings.ToLower(p.BeforeCRS), "paranoia_level")
}

// corroborationPhase1 is the SecLang after meshwaf's paranoia settings:
// detection paranoia level 2, so the selected PL2 rules run (their own
// score, in tx.inbound_anomaly_score_pl2, does not count at blocking level 1).
func corroborationPhase1(p Profile) string {
	if !p.CorroborationOn() {
		return ""
	}
	return fmt.Sprintf("SecAction \"id:%d,phase:1,pass,t:none,nolog,tag:'meshwaf',tag:'meshwaf/corroboration',setvar:tx.%s=2\"\n",
		ruleCorroborationLevel, txDetectionParanoia)
}

// hold is the actions appended to a PL1 rule so that its critical score
// goes to tx.<v> instead of the inbound score.
func hold(id int, v string) string {
	return fmt.Sprintf("SecRuleUpdateActionById %d \"setvar:tx.inbound_anomaly_score_pl1=-%%{tx.critical_anomaly_score},setvar:tx.%s=+%%{tx.critical_anomaly_score}\"\n", id, v)
}

// corroborationRules is the SecLang loaded after CRS's detection rules and
// before its blocking evaluation.
func corroborationRules(p Profile) string {
	if !p.CorroborationOn() {
		return ""
	}
	var b strings.Builder
	for _, id := range directPL2 {
		fmt.Fprintf(&b, "SecRuleUpdateActionById %d \"setvar:tx.inbound_anomaly_score_pl1=+%%{tx.critical_anomaly_score}\"\n", id)
	}
	for _, id := range corroboratingPL2 {
		key := id
		if k, ok := sameEvidence[id]; ok {
			key = k
		}
		fmt.Fprintf(&b, "SecRuleUpdateActionById %d \"setvar:tx.meshwaf_corr_%d=1", id, key)
		if v := classVar(id); v != "" {
			fmt.Fprintf(&b, ",setvar:tx.meshwaf_pl2_%s=+%%{tx.critical_anomaly_score}", v)
		}
		b.WriteString("\"\n")
	}
	for i, id := range promotedPL2 {
		b.WriteString(promoted(id, FirstPromoted+i))
	}
	fmt.Fprintf(&b, `SecRule &TX:/^meshwaf_corr_/ "@ge 2" "id:%d,phase:2,pass,t:none,log,msg:'Corroborated paranoia-level-2 detections',tag:'meshwaf',tag:'meshwaf/corroboration',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.critical_anomaly_score}'"`+"\n",
		CorroborationPL2)
	if on(p.FileNames) {
		b.WriteString(hold(heldFileName, "meshwaf_held_920120"))
		fmt.Fprintf(&b, `SecRule TX:meshwaf_held_920120 "@gt 0" "id:%d,phase:2,pass,t:none,log,msg:'Multipart file name check corroborated',tag:'meshwaf',tag:'meshwaf/corroboration',severity:'CRITICAL',chain"
    SecRule &TX:/^meshwaf_corr_9[34]/ "@ge 1" "t:none,setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.meshwaf_held_920120}'"
`, CorroborationFileName)
	}
	for i, h := range heldByClass {
		v := fmt.Sprintf("meshwaf_held_%d", h.id)
		b.WriteString(hold(h.id, v))
		// other: the class score from rules that score by themselves
		// (neither held nor corroborating paranoia-level-2 rules).
		fmt.Fprintf(&b, `SecRule TX:%[1]s "@gt 0" "id:%[2]d,phase:2,pass,t:none,log,msg:'Corroborated by another rule of its class',tag:'meshwaf',tag:'meshwaf/corroboration',severity:'CRITICAL',chain,setvar:tx.meshwaf_other=%%{tx.%[3]s},setvar:tx.meshwaf_other=-%%{tx.%[1]s},setvar:tx.meshwaf_other=-%%{tx.meshwaf_pl2_%[3]s}"
    SecRule TX:meshwaf_other "@gt 0" "t:none,setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.%[1]s}'"
`, v, CorroborationClass+i, h.classVar)
	}
	for _, id := range heldByShell {
		b.WriteString(hold(id, "meshwaf_held_shell"))
	}
	// Shell syntax: a command separator, pipe or backquote before a word
	// that has an argument (a flag, path, variable or number) or ends at
	// another separator or the value's end (prose has "; this will"); $( or
	// ${ before a word; a redirection to a path; or, at the start of a
	// value, a word and a flag, path or URL ("wget http://...").
	fmt.Fprintf(&b, `SecRule TX:meshwaf_held_shell "@gt 0" "id:%d,phase:2,pass,t:none,log,msg:'Command injection corroborated by shell syntax',tag:'meshwaf',tag:'meshwaf/corroboration',severity:'CRITICAL',chain"
    SecRule REQUEST_COOKIES|REQUEST_COOKIES_NAMES|ARGS_NAMES|ARGS|XML:/* "@rx (?:[;|\x60\n]|&&?)\s*[\w./\\'\"-]+(?:\s+(?:-{1,2}\w|[/~$]|\d)|\s*(?:[;|&\x60\n<>)]|\z))|\$[({]\s*[\w./\\'\"-]|[<>]\s*/|^\s*[\w.-]+\s+(?:-{1,2}\w|[/~]|[a-z]+://)" "t:none,t:urlDecodeUni,setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.meshwaf_held_shell}'"
`, CorroborationShell)
	for i, id := range heldUnlessToken {
		b.WriteString(tokenCorroboration(id, CorroborationToken+i))
	}
	return b.String()
}

// tokenCorroboration holds CRS rule id's score and returns it with the
// rule newID that adds it back when a value id reads is, after id's
// transformations, a single token that id's operator matches. newID
// carries id's tags, so a tag exclusion covers it too. Panics if CRS has
// no such rule (TestCorroborationToken).
func tokenCorroboration(id, newID int) string {
	r, ok := parseCRSRule(crsRuleText(id))
	if !ok {
		panic(fmt.Sprintf("corroboration: CRS rule %d not found or not a single SecRule", id))
	}
	v := fmt.Sprintf("meshwaf_held_%d", id)
	return hold(id, v) + fmt.Sprintf(`SecRule TX:%[1]s "@gt 0" "id:%[2]d,phase:2,pass,t:none,log,msg:'%[3]d corroborated: a value it reads is a single token',tag:'meshwaf',tag:'meshwaf/corroboration',%[4]s,severity:'CRITICAL',chain"
    SecRule %[5]s "@rx ^[\s\x0b]*(?:[^\s\x0b\x00]+(?:[\s\x0b]*$|\x00)|[A-Za-z]:/|//[^\s\x0b/])" "%[6]s,chain"
    SecRule MATCHED_VARS "%[7]s" "t:none,setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.%[1]s}'"
`, v, newID, id, strings.Join(r.tags, ","), r.targets, strings.Join(r.transforms, ","), r.operator)
}

// crsRule is what tokenCorroboration reads of a CRS rule.
type crsRule struct {
	targets    string   // "ARGS|REQUEST_COOKIES|..."
	operator   string   // as written, data files under @owasp_crs/
	transforms []string // "t:none", ...
	tags       []string // "tag:'attack-lfi'", ...
}

var (
	reSecRule   = regexp.MustCompile(`^SecRule (\S+) "((?:[^"\\]|\\.)*)"`)
	reTransform = regexp.MustCompile(`\bt:[A-Za-z0-9]+`)
	reCRSTag    = regexp.MustCompile(`tag:'[^']+'`)
	reChain     = regexp.MustCompile(`\bchain\b`)
)

// parseCRSRule reads a CRS rule's text (crsRuleText); false for a chain or
// text it cannot read.
func parseCRSRule(text string) (crsRule, bool) {
	m := reSecRule.FindStringSubmatch(text)
	tags := reCRSTag.FindAllString(text, -1)
	if m == nil || len(tags) == 0 || reChain.MatchString(text) {
		return crsRule{}, false
	}
	op := m[2]
	if f, ok := strings.CutPrefix(op, "@pmFromFile "); ok && !strings.Contains(f, "/") {
		op = "@pmFromFile @owasp_crs/" + f
	}
	return crsRule{targets: m[1], operator: op, transforms: reTransform.FindAllString(text, -1), tags: tags}, true
}

// corroborationAfterCRS is the SecLang loaded last, after CRS's REQUEST-999
// and the profile's exclusions and afterCRS, which may name them by id: it
// removes the paranoia-level-2 rules not selected.
func corroborationAfterCRS(p Profile) string {
	remove := corroborationRemoved(p)
	if len(remove) == 0 {
		return ""
	}
	ids := make([]string, len(remove))
	for i, id := range remove {
		ids[i] = strconv.Itoa(id)
	}
	return "SecRuleRemoveById " + strings.Join(ids, " ") + "\n"
}

// corroborationRemoved returns the ids of the paranoia-level-2 rules that
// corroboration removes from p's rule set (none when it is off).
func corroborationRemoved(p Profile) []int {
	if !p.CorroborationOn() {
		return nil
	}
	keep := slices.Concat(directPL2, corroboratingPL2)
	var remove []int
	for _, id := range crsRulesAtLevel(2) {
		if !slices.Contains(keep, id) {
			remove = append(remove, id)
		}
	}
	return remove
}

// tokenRules maps the ids of p's CorroborationToken rules to their tags
// (none when corroboration is off).
func tokenRules(p Profile) map[int][]string {
	if !p.CorroborationOn() {
		return nil
	}
	m := make(map[int][]string, len(heldUnlessToken))
	for i, id := range heldUnlessToken {
		tags := []string{"meshwaf", "meshwaf/corroboration"}
		if r, ok := parseCRSRule(crsRuleText(id)); ok {
			for _, t := range r.tags {
				tags = append(tags, strings.TrimSuffix(strings.TrimPrefix(t, "tag:'"), "'"))
			}
		}
		m[CorroborationToken+i] = tags
	}
	return m
}

// ruleCopies maps each CRS rule that meshwaf scores through a rule of its
// own reading the same values (a promoted rule's copy, a heldUnlessToken
// rule's CorroborationToken rule) to that rule's id in p (none when
// corroboration is off): an exclusion of the CRS rule covers it too.
func ruleCopies(p Profile) map[int]int {
	if !p.CorroborationOn() {
		return nil
	}
	m := make(map[int]int, len(promotedPL2)+len(heldUnlessToken))
	for i, id := range promotedPL2 {
		m[id] = FirstPromoted + i
	}
	for i, id := range heldUnlessToken {
		m[id] = CorroborationToken + i
	}
	return m
}

// promoted returns CRS rule id (a chain) as a rule with id newID that adds
// its paranoia-level-2 score to level 1, tagged meshwaf/corroboration.
// Panics if CRS has no such rule (TestCorroborationPromoted).
func promoted(id, newID int) string {
	text := crsRuleText(id)
	if text == "" {
		panic(fmt.Sprintf("corroboration: CRS rule %d not found", id))
	}
	text = strings.Replace(text, fmt.Sprintf(`"id:%d,`, id), fmt.Sprintf(`"id:%d,`, newID), 1)
	text = strings.Replace(text, "tag:'paranoia-level/2',", "tag:'paranoia-level/2',tag:'meshwaf',tag:'meshwaf/corroboration',", 1)
	return strings.ReplaceAll(text, "inbound_anomaly_score_pl2=", "inbound_anomaly_score_pl1=") + "\n"
}

// crsRuleText returns the text of CRS request rule id with its chained
// rules (up to the next unindented directive or comment), "" if none.
func crsRuleText(id int) string {
	files, _ := fs.Glob(coreruleset.FS, "@owasp_crs/REQUEST-*.conf") // a valid pattern
	for _, f := range files {
		b, _ := fs.ReadFile(coreruleset.FS, f) // listed by Glob
		s := string(b)
		i := strings.Index(s, fmt.Sprintf(`"id:%d,`, id))
		if i < 0 {
			continue
		}
		start := strings.LastIndex(s[:i], "\nSecRule ") + 1
		end := len(s)
		if loc := reTopLevel.FindStringIndex(s[i:]); loc != nil {
			end = i + loc[0] + 1
		}
		return strings.TrimRight(s[start:end], "\n")
	}
	return ""
}

// reTopLevel finds the next unindented directive or comment line.
var reTopLevel = regexp.MustCompile(`\n(?:SecRule|SecAction|SecMarker|#)`)

// reRuleID finds rule ids in CRS's files.
var reRuleID = regexp.MustCompile(`id:(\d+),`)

// crsRulesAtLevel returns the ids of CRS's request rules tagged
// paranoia-level/<pl>, in file order (the embedded files always read).
func crsRulesAtLevel(pl int) []int {
	files, _ := fs.Glob(coreruleset.FS, "@owasp_crs/REQUEST-*.conf") // a valid pattern
	tag := fmt.Sprintf("tag:'paranoia-level/%d'", pl)
	var ids []int
	for _, f := range files {
		b, _ := fs.ReadFile(coreruleset.FS, f) // listed by Glob
		s := string(b)
		locs := reRuleID.FindAllStringSubmatchIndex(s, -1)
		for i, l := range locs {
			end := len(s)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			if strings.Contains(s[l[1]:end], tag) {
				id, _ := strconv.Atoi(s[l[2]:l[3]]) // digits
				ids = append(ids, id)
			}
		}
	}
	return ids
}
