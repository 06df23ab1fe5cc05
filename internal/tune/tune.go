// Package tune proposes profile exclusions from meshwaf's audit lines
// (`meshwaf tune`): it groups the rules that matched by profile, rule,
// matched variable and path, and writes the narrowest exclusion of each
// group as YAML for a profile's exclusions, rendered from
// inspector.Exclusion and checked by inspector.Profile.Validate.
package tune

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

// MaxLine is the longest audit line read; longer lines are skipped.
const MaxLine = 1 << 20

// Options filter the proposals.
type Options struct {
	// MinCount leaves out groups seen in fewer checks (values below 1
	// count as 1).
	MinCount int
	// Profile, when set, reads only that profile's audit lines.
	Profile string
}

// Proposal is one exclusion and the checks that led to it.
type Proposal struct {
	Profile   string
	Exclusion inspector.Exclusion
	Msg       string                     // the rule's message
	Checks    int                        // audit lines with this rule, variable and path
	Decisions map[inspector.Decision]int // of those checks
	Example   string                     // method, masked target, host and request id of the first
}

// Report is what Propose found.
type Report struct {
	Lines     int // lines read
	Skipped   int // not audit lines, unreadable, or of another profile
	Findings  int // audit lines with at least one rule
	Proposals []Proposal
	// Unproposed counts, by rule id, matches that gave no exclusion: no
	// variable an exclusion can name (meshwaf's guards, CRS's
	// correlation), or a path that a pathPrefix cannot express. Rules
	// tagged anomaly-evaluation (the score checks) are not counted: they
	// go away with the rules that add to the score.
	Unproposed map[int]int
	MinCount   int
}

// inspected are the collections of request data a proposal may name.
var inspected = map[string]bool{
	"ARGS": true, "ARGS_GET": true, "ARGS_POST": true, "ARGS_NAMES": true, "ARGS_GET_NAMES": true, "ARGS_POST_NAMES": true,
	"REQUEST_COOKIES": true, "REQUEST_COOKIES_NAMES": true, "REQUEST_HEADERS": true, "REQUEST_HEADERS_NAMES": true,
	"REQUEST_FILENAME": true, "REQUEST_BASENAME": true, "REQUEST_URI": true, "REQUEST_URI_RAW": true, "REQUEST_LINE": true,
	"QUERY_STRING": true, "REQUEST_BODY": true, "FILES": true, "FILES_NAMES": true, "XML": true, "MULTIPART_PART_HEADERS": true,
}

type groupKey struct {
	profile, target, path string
	rule                  int
}

type group struct {
	Proposal
	order   int
	methods []string
}

// Propose reads audit lines (extauthz.AuditLine, one JSON object a line)
// from r. Lines that are not audit lines are counted and skipped, so a
// whole container log can be read.
func Propose(r io.Reader, o Options) (Report, error) {
	rep := Report{Unproposed: map[int]int{}, MinCount: max(o.MinCount, 1)}
	groups := map[groupKey]*group{}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, tooLong, err := readLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		if tooLong {
			rep.Lines++
			rep.Skipped++
			continue
		}
		rep.Lines++
		var l extauthz.AuditLine
		if json.Unmarshal(line, &l) != nil || l.LogType != extauthz.AuditLogType || (o.Profile != "" && l.Profile != o.Profile) {
			rep.Skipped++
			continue
		}
		if len(l.Rules) == 0 {
			continue
		}
		rep.Findings++
		p, pathOK := exclusionPath(l.Path)
		seen := map[groupKey]bool{}
		for _, rule := range l.Rules {
			if slices.Contains(rule.Tags, "anomaly-evaluation") {
				continue
			}
			targets := slices.DeleteFunc(slices.Clone(rule.Targets), func(t string) bool {
				coll, _, _ := strings.Cut(t, ":")
				return !inspected[coll]
			})
			if len(targets) == 0 || !pathOK {
				rep.Unproposed[rule.ID]++
				continue
			}
			for _, t := range targets {
				k := groupKey{profile: l.Profile, rule: rule.ID, target: t, path: p}
				if seen[k] {
					continue
				}
				seen[k] = true
				g := groups[k]
				if g == nil {
					g = &group{order: len(groups), Proposal: Proposal{
						Profile: l.Profile, Msg: rule.Msg, Decisions: map[inspector.Decision]int{},
						Example: example(l),
						Exclusion: inspector.Exclusion{
							RuleIDs: []int{rule.ID}, Targets: []string{t}, PathPrefix: p,
						},
					}}
					groups[k] = g
				}
				g.Checks++
				g.Decisions[l.Decision]++
				if m := strings.ToUpper(l.Method); m != "" && !slices.Contains(g.methods, m) {
					g.methods = append(g.methods, m)
				}
			}
		}
	}
	var gs []*group
	for _, g := range groups {
		if g.Checks < rep.MinCount {
			continue
		}
		slices.Sort(g.methods)
		g.Exclusion.Methods = g.methods
		if (inspector.Profile{Exclusions: []inspector.Exclusion{g.Exclusion}}).WithDefaults().Validate() != nil {
			// A method or path an exclusion cannot name: no proposal.
			rep.Unproposed[g.Exclusion.RuleIDs[0]] += g.Checks
			continue
		}
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *group) int {
		return cmp.Or(
			cmp.Compare(profileRank(a.Profile), profileRank(b.Profile)),
			cmp.Compare(a.Profile, b.Profile),
			cmp.Compare(b.Checks, a.Checks),
			cmp.Compare(a.Exclusion.RuleIDs[0], b.Exclusion.RuleIDs[0]),
			cmp.Compare(a.Exclusion.Targets[0], b.Exclusion.Targets[0]),
			cmp.Compare(a.Exclusion.PathPrefix, b.Exclusion.PathPrefix),
		)
	})
	for _, g := range gs {
		rep.Proposals = append(rep.Proposals, g.Proposal)
	}
	return rep, nil
}

// readLine reads one line; tooLong reports a line over MaxLine bytes,
// read to its end and dropped. err is io.EOF only when nothing was read.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) <= MaxLine+1 {
			line = append(line, frag...)
		} else {
			tooLong = true
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && (len(line) > 0 || tooLong):
			return line, tooLong, nil
		}
		return line, tooLong, err
	}
}

func profileRank(name string) int {
	if name == inspector.DefaultProfileName {
		return 0
	}
	return 1
}

// exclusionPath is the pathPrefix for a logged target: its path before
// any path parameter or query, URL-decoded and normalised as exclusions
// compare it. ok is false for a target cut by the audit line's bound.
func exclusionPath(target string) (string, bool) {
	p, _, _ := strings.Cut(target, "?")
	p, _, _ = strings.Cut(p, ";")
	if strings.HasSuffix(p, "…") || !strings.HasPrefix(p, "/") {
		return "", false
	}
	d, err := url.PathUnescape(p)
	if err != nil {
		return "", false
	}
	return path.Clean(d), true
}

// example shows one check without values: the target as the audit log
// masks it (masked again in case the log was written with
// auditRawValues), never header values, which audit lines do not carry.
func example(l extauthz.AuditLine) string {
	s := strings.ToUpper(l.Method) + " " + extauthz.RedactTarget(l.Path)
	var meta []string
	if l.Host != "" {
		meta = append(meta, "host "+l.Host)
	}
	if l.RequestID != "" {
		meta = append(meta, "request id "+l.RequestID)
	}
	if len(meta) > 0 {
		s += " (" + strings.Join(meta, ", ") + ")"
	}
	return s
}

// Write writes rep as YAML: a comment with the figures, then the
// proposals under defaultProfile.exclusions and profiles[].exclusions,
// each with a comment giving the rule, its counts and an example.
func Write(w io.Writer, rep Report) error {
	head := fmt.Sprintf("meshwaf tune: %d exclusions from %d lines (%d audit lines with findings, %d skipped; min count %d).\n"+
		"Each takes one rule off one variable on one path for the methods seen. Confirm a proposal\n"+
		"with meshwaf inspect, then merge it into that profile's exclusions in your config.",
		len(rep.Proposals), rep.Lines, rep.Findings, rep.Skipped, rep.MinCount)
	if ids := unproposed(rep.Unproposed); ids != "" {
		head += "\nNot proposed (no variable or path an exclusion can name): " + ids + "."
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: head}
	var named *yaml.Node
	byProfile := map[string]*yaml.Node{}
	for _, p := range rep.Proposals {
		seq := byProfile[p.Profile]
		if seq == nil {
			seq = &yaml.Node{Kind: yaml.SequenceNode}
			byProfile[p.Profile] = seq
			excl := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("exclusions"), seq}}
			if p.Profile == inspector.DefaultProfileName {
				doc.Content = append(doc.Content, scalar("defaultProfile"), excl)
			} else {
				if named == nil {
					named = &yaml.Node{Kind: yaml.SequenceNode}
					doc.Content = append(doc.Content, scalar("profiles"), named)
				}
				excl.Content = append([]*yaml.Node{scalar("name"), scalar(p.Profile)}, excl.Content...)
				named.Content = append(named.Content, excl)
			}
		}
		var n yaml.Node
		if err := n.Encode(p.Exclusion); err != nil {
			return err
		}
		for i := 1; i < len(n.Content); i += 2 {
			if n.Content[i].Kind == yaml.SequenceNode {
				n.Content[i].Style = yaml.FlowStyle
			}
		}
		n.HeadComment = fmt.Sprintf("%d %s\n%s: %s on %s\ne.g. %s",
			p.Exclusion.RuleIDs[0], p.Msg, counts(p), p.Exclusion.Targets[0], p.Exclusion.PathPrefix, p.Example)
		seq.Content = append(seq.Content, &n)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if len(doc.Content) == 0 {
		// Only the comment: an empty document.
		_, err := fmt.Fprintf(w, "# %s\n{}\n", strings.ReplaceAll(head, "\n", "\n# "))
		return err
	}
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

func counts(p Proposal) string {
	var parts []string
	for _, d := range []inspector.Decision{inspector.Detect, inspector.Deny, inspector.Allow} {
		if n := p.Decisions[d]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", d, n))
		}
	}
	noun := "checks"
	if p.Checks == 1 {
		noun = "check"
	}
	return fmt.Sprintf("%d %s (%s)", p.Checks, noun, strings.Join(parts, ", "))
}

func unproposed(m map[int]int) string {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("rule %d ×%d", id, m[id])
	}
	return strings.Join(parts, ", ")
}
