package inspector

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Exclusion switches rules off for a profile, the structured form of CRS's
// SecRuleRemoveById / SecRuleRemoveByTag / SecRuleUpdateTargetById. With
// PathPrefix or Methods it only applies to matching requests (a runtime
// ctl: exclusion placed before CRS); otherwise it is configure-time.
type Exclusion struct {
	// RuleIDs and Tags name the rules; at least one of them is required.
	RuleIDs []int    `yaml:"ruleIds,omitempty" json:"ruleIds,omitempty"`
	Tags    []string `yaml:"tags,omitempty" json:"tags,omitempty"`
	// Targets, when set, remove only these variables from the rules (for
	// example ARGS:comment) instead of the whole rules.
	Targets []string `yaml:"targets,omitempty" json:"targets,omitempty"`
	// PathPrefix limits the exclusion to request paths under it (compared
	// after URL decoding and path normalisation), on segment boundaries:
	// /api/pages takes /api/pages and /api/pages/..., not /api/pagesecret
	// or /api/pages;x.
	PathPrefix string `yaml:"pathPrefix,omitempty" json:"pathPrefix,omitempty"`
	// Methods limits the exclusion to these HTTP methods.
	Methods []string `yaml:"methods,omitempty" json:"methods,omitempty"`
}

var (
	reTag    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]*$`)
	reMethod = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`)
	reTarget = regexp.MustCompile(`^[A-Z_]+(?::[A-Za-z0-9_.\-\[\]]+)?$`)
	rePath   = regexp.MustCompile(`^/[A-Za-z0-9_.~!$&()*+,;=:@%/-]*$`)
)

// validate reports every invalid field of e, each a *fielderr.Error whose
// path is relative to the exclusion.
func (e Exclusion) validate() error {
	var errs []error
	if len(e.RuleIDs) == 0 && len(e.Tags) == 0 {
		errs = append(errs, fielderr.Errorf(fielderr.At("ruleIds"), "an exclusion needs ruleIds or tags"))
	}
	for _, id := range e.RuleIDs {
		if id <= 0 {
			errs = append(errs, fielderr.Errorf(fielderr.At("ruleIds"), "%d is not a rule id", id))
		}
	}
	for _, t := range e.Tags {
		if !reTag.MatchString(t) {
			errs = append(errs, fielderr.Errorf(fielderr.At("tags"), "%q is not a rule tag", t))
		}
	}
	for _, t := range e.Targets {
		if !reTarget.MatchString(t) {
			errs = append(errs, fielderr.Errorf(fielderr.At("targets"), "%q is not a variable like ARGS:name", t))
		}
	}
	if e.PathPrefix != "" {
		switch {
		case !rePath.MatchString(e.PathPrefix):
			errs = append(errs, fielderr.Errorf(fielderr.At("pathPrefix"), "%q must start with / and hold only URL path characters", e.PathPrefix))
		case strings.ContainsAny(e.PathPrefix, "%+"):
			errs = append(errs, fielderr.Errorf(fielderr.At("pathPrefix"), "%q is compared with the URL-decoded path, where %% and + are decoded: write it decoded", e.PathPrefix))
		case path.Clean(e.PathPrefix) != strings.TrimSuffix(e.PathPrefix, "/") && e.PathPrefix != "/":
			errs = append(errs, fielderr.Errorf(fielderr.At("pathPrefix"), "%q is compared with the normalised path: write it without //, /./ or /../ (%q)", e.PathPrefix, path.Clean(e.PathPrefix)))
		}
	}
	for _, m := range e.Methods {
		if !reMethod.MatchString(m) {
			errs = append(errs, fielderr.Errorf(fielderr.At("methods"), "%q is not an upper-case HTTP method", m))
		}
	}
	return errors.Join(errs...)
}

// exclusionRuleBase is the first id of the runtime exclusion rules meshwaf
// generates for a profile (ModSecurity's local-use id range).
const exclusionRuleBase = 99200

// exclusionDirectives compiles exclusions to SecLang: runtime ones (with a
// path or method condition) go before CRS, configure-time ones after it.
// An exclusion naming a CRS rule that meshwaf also scores through a rule
// of its own (copies: CRS id -> that rule's id, ruleCopies) names that
// rule too. SecRuleUpdateTarget* changes a chain's first link only, so a
// static target exclusion that names a rule of chained (rules whose first
// link reads no request value: id -> tags) by id or by tag is also written
// as a phase-1 ctl action, which reaches every link.
func exclusionDirectives(exs []Exclusion, copies map[int]int, chained map[int][]string) (beforeCRS, afterCRS string) {
	var before, after strings.Builder
	for i, e := range exs {
		e.Targets = withViewTargets(e.Targets)
		e.RuleIDs = withCopies(e.RuleIDs, copies)
		id := exclusionRuleBase + i
		if e.PathPrefix == "" && len(e.Methods) == 0 {
			writeStaticExclusion(&after, e)
			if ctl := chainTargetCtl(e, chained); len(e.Targets) > 0 && len(ctl) > 0 {
				fmt.Fprintf(&after, "SecAction \"id:%d,phase:1,pass,nolog,t:none,%s\"\n", id, strings.Join(ctl, ","))
			}
			continue
		}
		ctl := exclusionCtl(e)
		methods := "^(?:" + strings.Join(e.Methods, "|") + ")$"
		path := pathPrefixPattern(e.PathPrefix)
		switch {
		case e.PathPrefix != "" && len(e.Methods) > 0:
			fmt.Fprintf(&before, "SecRule REQUEST_FILENAME \"@rx %s\" \"id:%d,phase:1,pass,nolog,t:none,t:urlDecodeUni,t:normalizePath,chain\"\n", path, id)
			fmt.Fprintf(&before, "  SecRule REQUEST_METHOD \"@rx %s\" \"t:none,%s\"\n", methods, strings.Join(ctl, ","))
		case e.PathPrefix != "":
			fmt.Fprintf(&before, "SecRule REQUEST_FILENAME \"@rx %s\" \"id:%d,phase:1,pass,nolog,t:none,t:urlDecodeUni,t:normalizePath,%s\"\n", path, id, strings.Join(ctl, ","))
		default:
			fmt.Fprintf(&before, "SecRule REQUEST_METHOD \"@rx %s\" \"id:%d,phase:1,pass,nolog,t:none,%s\"\n", methods, id, strings.Join(ctl, ","))
		}
	}
	return before.String(), after.String()
}

// exclusionCtl is e as ctl actions.
func exclusionCtl(e Exclusion) []string {
	var ctl []string
	for _, id := range e.RuleIDs {
		if len(e.Targets) == 0 {
			ctl = append(ctl, "ctl:ruleRemoveById="+strconv.Itoa(id))
		}
		for _, t := range e.Targets {
			ctl = append(ctl, fmt.Sprintf("ctl:ruleRemoveTargetById=%d;%s", id, t))
		}
	}
	for _, tag := range e.Tags {
		if len(e.Targets) == 0 {
			ctl = append(ctl, "ctl:ruleRemoveByTag="+tag)
		}
		for _, t := range e.Targets {
			ctl = append(ctl, fmt.Sprintf("ctl:ruleRemoveTargetByTag=%s;%s", tag, t))
		}
	}
	return ctl
}

// chainTargetCtl is the ctl actions of e's targets for the rules of
// chained it names by id, and for its tags that a rule of chained has.
func chainTargetCtl(e Exclusion, chained map[int][]string) []string {
	named := Exclusion{Targets: e.Targets}
	for _, id := range e.RuleIDs {
		if _, ok := chained[id]; ok {
			named.RuleIDs = append(named.RuleIDs, id)
		}
	}
	for _, tag := range e.Tags {
		for _, tags := range chained {
			if slices.Contains(tags, tag) {
				named.Tags = append(named.Tags, tag)
				break
			}
		}
	}
	if len(named.RuleIDs) == 0 && len(named.Tags) == 0 {
		return nil
	}
	return exclusionCtl(named)
}

// withCopies returns ids with, after each id that has a copy, the copy's id.
func withCopies(ids []int, copies map[int]int) []int {
	var out []int
	for _, id := range ids {
		out = append(out, id)
		if c, ok := copies[id]; ok {
			out = append(out, c)
		}
	}
	return out
}

// pathPrefixPattern is the @rx pattern of a path prefix: the prefix
// itself, then the end of the path or a '/'. Only '/' ends a segment, so
// a prefix never takes a longer segment (/api/pagesecret) nor a path
// parameter (/api/pages;x), which inspects more rather than less.
func pathPrefixPattern(prefix string) string {
	if strings.HasSuffix(prefix, "/") {
		return "^" + regexp.QuoteMeta(prefix)
	}
	return "^" + regexp.QuoteMeta(prefix) + "(?:/|$)"
}

func writeStaticExclusion(b *strings.Builder, e Exclusion) {
	if len(e.Targets) == 0 {
		if len(e.RuleIDs) > 0 {
			ids := make([]string, len(e.RuleIDs))
			for i, id := range e.RuleIDs {
				ids[i] = strconv.Itoa(id)
			}
			fmt.Fprintf(b, "SecRuleRemoveById %s\n", strings.Join(ids, " "))
		}
		for _, tag := range e.Tags {
			fmt.Fprintf(b, "SecRuleRemoveByTag %s\n", tag)
		}
		return
	}
	for _, t := range e.Targets {
		for _, id := range e.RuleIDs {
			fmt.Fprintf(b, "SecRuleUpdateTargetById %d \"!%s\"\n", id, t)
		}
		for _, tag := range e.Tags {
			fmt.Fprintf(b, "SecRuleUpdateTargetByTag %s \"!%s\"\n", tag, t)
		}
	}
}

// viewNames matches one decoded-view suffix (internal/views); a view of a
// view has two.
const viewNames = "(?::(?:b64|url2|u|nfkc|html))"

// withViewTargets returns targets with, after each target that names an
// argument, cookie or header, the arguments meshwaf derives from it
// (beyond.go): its decoded views, and for a header its header argument and
// that one's views. So excluding ARGS:q also excludes ARGS:q:b64.
func withViewTargets(targets []string) []string {
	var out []string
	for _, t := range targets {
		out = append(out, t)
		v, key, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		k := regexpKey(key)
		switch v {
		case "ARGS", "ARGS_GET", "ARGS_POST":
			out = append(out, fmt.Sprintf("%s:/^%s%s%s?$/", v, k, viewNames, viewNames))
		case "REQUEST_COOKIES":
			out = append(out, fmt.Sprintf("ARGS:/^%s%s%s%s?$/", CookieArgPrefix, k, viewNames, viewNames))
		case "REQUEST_HEADERS":
			out = append(out, fmt.Sprintf("ARGS:/^%s%s%s?%s?$/", HeaderArgPrefix, strings.ToLower(k), viewNames, viewNames))
		}
	}
	return out
}

// regexpKey quotes a target key (reTarget's characters) for a regexp
// without backslashes, which SecLang would read.
func regexpKey(key string) string {
	var b strings.Builder
	for _, c := range key {
		switch c {
		case '.', '[', ']':
			b.WriteString("[" + string(c) + "]")
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
