package preselect

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// secRule is what pre-selection reads of one compiled rule: its text as
// Coraza reports it (the rule observer's Raw, a chain's head only).
type secRule struct {
	vars       []ruleVar
	op         string // operator name without "@" and "!"
	opArg      string
	negated    bool
	trans      []string // after the last t:none
	multiMatch bool
	skip       int // skip:N, 0 without
	nTrans     int // t: actions read, t:none included
	nActions   int
}

// ruleVar is one variable of a rule's target list.
type ruleVar struct {
	name    string // upper case, as written
	key     string // "" for the whole collection
	keyRx   bool   // key is /regex/
	exclude bool   // !VAR:key: narrows the targets
	count   bool   // &VAR
}

// parseSecRule parses the text of one SecRule as the rule observer gives
// it. It fails on anything it does not read exactly: the caller then keeps
// the rule.
func parseSecRule(raw string) (secRule, error) {
	var r secRule
	rest, ok := strings.CutPrefix(strings.TrimSpace(raw), "SecRule")
	if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return r, errors.New("not a SecRule")
	}
	args, err := splitArgs(rest)
	if err != nil {
		return r, err
	}
	if len(args) != 3 {
		return r, fmt.Errorf("%d arguments, want 3", len(args))
	}
	if r.vars, err = parseVars(args[0]); err != nil {
		return r, err
	}
	op := args[1]
	if strings.HasPrefix(op, "!") {
		r.negated = true
		op = op[1:]
	}
	if strings.HasPrefix(op, "@") {
		name, arg, _ := strings.Cut(op[1:], " ")
		r.op, r.opArg = strings.TrimSpace(name), strings.TrimSpace(arg)
	} else {
		r.op, r.opArg = "rx", strings.TrimSpace(op)
	}
	if err := r.parseActions(args[2]); err != nil {
		return r, err
	}
	return r, nil
}

// splitArgs splits the text after the directive into its arguments: bare
// words or double-quoted strings in which \" and \\ stand for themselves.
func splitArgs(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ', '\t':
			i++
		case '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) && s[j+1] == '"' {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("unterminated quote")
			}
			out = append(out, b.String())
			i = j + 1
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' {
				if s[j] == '"' {
					return nil, errors.New("quote inside a bare word")
				}
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out, nil
}

// parseVars reads VAR|!VAR:key|&VAR|VAR:/regex/.
func parseVars(s string) ([]ruleVar, error) {
	var vars []ruleVar
	for s != "" {
		var v ruleVar
		switch s[0] {
		case '!':
			v.exclude, s = true, s[1:]
		case '&':
			v.count, s = true, s[1:]
		}
		i := 0
		for i < len(s) && (s[i] == '_' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= 'a' && s[i] <= 'z') {
			i++
		}
		if i == 0 {
			return nil, fmt.Errorf("variable expected at %q", s)
		}
		written := s[:i]
		v.name, s = strings.ToUpper(written), s[i:]
		xpath := false
		if strings.HasPrefix(s, ":") {
			s = s[1:]
			if xpath = written == "XML" || written == "JSON"; xpath {
				// An XPath: everything up to the next |, as Coraza reads it
				// (only for the names in upper case). Coraza drops a last
				// '/' of the rule's last variable.
				j := strings.IndexByte(s, '|')
				if j < 0 {
					j = len(s)
				}
				v.key, s = s[:j], s[j:]
				if strings.HasSuffix(v.key, "/") {
					return nil, fmt.Errorf("XPath %q ends in /", v.key)
				}
			} else if strings.HasPrefix(s, "/") {
				j := 1
				for j < len(s) && s[j] != '/' {
					if s[j] == '\\' {
						j++
					}
					j++
				}
				if j >= len(s) {
					return nil, errors.New("unterminated key regex")
				}
				v.key, v.keyRx, s = s[1:j], true, s[j+1:]
			} else {
				j := strings.IndexByte(s, '|')
				if j < 0 {
					j = len(s)
				}
				v.key, s = s[:j], s[j:]
			}
		}
		if strings.ContainsAny(v.key, "'\"") {
			return nil, fmt.Errorf("quoted key %q", v.key)
		}
		if !v.keyRx && !xpath && strings.Contains(v.key, "/") {
			// Coraza starts a regex key at any '/' of a key.
			return nil, fmt.Errorf("/ in key %q", v.key)
		}
		vars = append(vars, v)
		if s == "" {
			break
		}
		if s[0] != '|' {
			return nil, fmt.Errorf("| expected at %q", s)
		}
		s = s[1:]
		if s == "" {
			return nil, errors.New("empty variable")
		}
	}
	if len(vars) == 0 {
		return nil, errors.New("no variables")
	}
	return vars, nil
}

// parseActions reads the actions pre-selection needs; a value in single
// quotes may hold commas.
func (r *secRule) parseActions(s string) error {
	raw := s
	for s != "" {
		var item string
		inQuote := false
		i := 0
		for ; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				continue
			}
			if s[i] == '\'' {
				inQuote = !inQuote
			}
			if s[i] == ',' && !inQuote {
				break
			}
		}
		if inQuote {
			return errors.New("unterminated single quote in actions")
		}
		item, s = strings.TrimSpace(s[:i]), s[min(i+1, len(s)):]
		name, val, _ := strings.Cut(item, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		val = strings.Trim(strings.TrimSpace(val), "'")
		switch name {
		case "t":
			r.nTrans++
			if val == "none" { // Coraza: other spellings are the identity transformation
				r.trans = r.trans[:0]
			} else {
				r.trans = append(r.trans, val)
			}
		case "multimatch":
			r.multiMatch = true
		case "skip":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return fmt.Errorf("skip %q", val)
			}
			r.skip = n
		}
		r.nActions++
	}
	// Cross-check against the raw text: an action this parser read as part
	// of a quoted value would change what the rule does.
	lower := strings.ToLower(raw)
	if n := len(reTransformation.FindAllStringIndex(raw, -1)); n != r.nTrans {
		return fmt.Errorf("%d t: actions in the text, %d read", n, r.nTrans)
	}
	if strings.Contains(lower, "multimatch") != r.multiMatch {
		return errors.New("multiMatch in the text but not read")
	}
	if strings.Contains(lower, "skip:") != (r.skip > 0) {
		return errors.New("skip: in the text but not read")
	}
	return nil
}

// reTransformation finds every t: action, quoted or not.
var reTransformation = regexp.MustCompile(`(?:^|,)\s*t:`)
