package meshpolicy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// RequestMatch is the HTTP narrowing of one Istio operation (or one
// narrowed grant): a request matches when its method matches some of
// Methods (any method when empty) and none of NotMethods, and its path
// some of Paths (any path when empty) and none of NotPaths. Values are in
// Istio's string forms: "*" (any non-empty value), "prefix*", "*suffix",
// anything else exact.
type RequestMatch struct {
	Methods, NotMethods, Paths, NotPaths []string
}

// Requests is a union of RequestMatch: the HTTP requests a flow admits.
type Requests []RequestMatch

// SourceSet is a set of source indexes of a plan.
type SourceSet interface{ Has(i int) bool }

// SourceList is a SourceSet listing its indexes.
type SourceList []int

// Has reports whether i is in the list.
func (l SourceList) Has(i int) bool { return slices.Contains(l, i) }

// Narrowing admits Sources on one destination port for Requests only. When
// Unknown, it admits some requests verify cannot tell (hosts, path
// templates, or a rule that matches the source only conditionally), and
// Requests is not the whole of them.
type Narrowing struct {
	Sources  SourceSet
	Requests Requests
	Unknown  bool
}

// Request is one HTTP request as far as narrowings look at it.
type Request struct{ Method, Path string }

func (r Request) String() string { return r.Method + " " + strconv.Quote(r.Path) }

// Matches reports whether some RequestMatch of rs admits r.
func (rs Requests) Matches(r Request) bool {
	return slices.ContainsFunc(rs, func(m RequestMatch) bool { return m.Matches(r) })
}

// Matches reports whether m admits r.
func (m RequestMatch) Matches(r Request) bool {
	return (len(m.Methods) == 0 || AnyPatternMatches(m.Methods, r.Method)) && !AnyPatternMatches(m.NotMethods, r.Method) &&
		(len(m.Paths) == 0 || AnyPatternMatches(m.Paths, r.Path)) && !AnyPatternMatches(m.NotPaths, r.Path)
}

// AnyPatternMatches reports whether some pattern matches v (PatternMatches).
func AnyPatternMatches(patterns []string, v string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return PatternMatches(p, v) })
}

// PatternMatches is Istio's string match of methods and paths (its
// HeaderMatcher and PathMatcher): "*" matches any non-empty value,
// "*suffix" by suffix, "prefix*" by prefix, anything else exactly.
func PatternMatches(pattern, v string) bool {
	switch {
	case pattern == "*":
		return v != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, pattern[:len(pattern)-1])
	}
	return pattern == v
}

// String renders the union for people, each list quoted so that a comma
// inside a path shows: `methods ["GET"] paths ["/x,y"] or ...`.
func (rs Requests) String() string {
	if len(rs) == 0 {
		return "no request"
	}
	parts := make([]string, len(rs))
	for i, m := range rs {
		parts[i] = m.String()
	}
	return strings.Join(parts, " or ")
}

func (m RequestMatch) String() string {
	var fields []string
	for _, f := range []struct {
		name string
		vals []string
	}{{"methods", m.Methods}, {"notMethods", m.NotMethods}, {"paths", m.Paths}, {"notPaths", m.NotPaths}} {
		if len(f.vals) == 0 {
			continue
		}
		q := make([]string, len(f.vals))
		for i, v := range f.vals {
			q[i] = strconv.Quote(v)
		}
		fields = append(fields, f.name+" ["+strings.Join(q, ", ")+"]")
	}
	if len(fields) == 0 {
		return "every request"
	}
	return strings.Join(fields, " ")
}

// SameRequests reports whether a and b admit exactly the same requests
// and, when not, a request one admits and the other does not.
//
// Unions that list the same matches (each list compared as a set) are
// equal without more work; this is the case for policies rendered from
// the graph. Otherwise both are evaluated on probe requests: every method
// probe with every path probe, where each dimension's probes are, from the
// patterns of both sides, every exact value, and p+c+s for every prefix
// literal p and suffix literal s (each also empty), c a character in no
// pattern. This is exact for non-empty values: whether a value matches
// each pattern depends only on the longest prefix literal and the longest
// suffix literal it carries and on which exact value (if any) it is, and
// p+c+s carries exactly p and s as its longest (a longer literal would
// have to contain c) and equals no exact value. The probe p+c+s thus
// matches the same patterns as every value of its class, so two unions
// that differ on some request differ on some probe. Empty methods and
// paths (never sent) are not probed.
func SameRequests(a, b Requests) (bool, Request) {
	if sameMatchSets(a, b) {
		return true, Request{}
	}
	var methods, paths [][]string
	for _, rs := range []Requests{a, b} {
		for _, m := range rs {
			methods = append(methods, m.Methods, m.NotMethods)
			paths = append(paths, m.Paths, m.NotPaths)
		}
	}
	for _, meth := range probeValues(methods...) {
		for _, path := range probeValues(paths...) {
			r := Request{Method: meth, Path: path}
			if a.Matches(r) != b.Matches(r) {
				return false, r
			}
		}
	}
	return true, Request{}
}

// sameMatchSets reports whether a and b list the same matches, each list
// and the union compared as sets.
func sameMatchSets(a, b Requests) bool {
	norm := func(rs Requests) []string {
		keys := make([]string, len(rs))
		for i, m := range rs {
			var b strings.Builder
			for _, l := range [][]string{m.Methods, m.NotMethods, m.Paths, m.NotPaths} {
				s := slices.Clone(l)
				slices.Sort(s)
				for _, v := range slices.Compact(s) {
					b.WriteString(strconv.Quote(v))
				}
				b.WriteByte('|')
			}
			keys[i] = b.String()
		}
		slices.Sort(keys)
		return slices.Compact(keys)
	}
	return slices.Equal(norm(a), norm(b))
}

// probeValues are values that meet every class of non-empty values the
// patterns tell apart (see SameRequests), in a stable order.
func probeValues(lists ...[]string) []string {
	var exact, prefixes, suffixes []string
	used := map[rune]bool{}
	for _, l := range lists {
		for _, p := range l {
			for _, r := range p {
				used[r] = true
			}
			switch {
			case p == "*":
			case strings.HasPrefix(p, "*"):
				suffixes = append(suffixes, p[1:])
			case strings.HasSuffix(p, "*"):
				prefixes = append(prefixes, p[:len(p)-1])
			default:
				exact = append(exact, p)
			}
		}
	}
	c := freshRune(used)
	out := exact
	for _, p := range append([]string{""}, prefixes...) {
		for _, s := range append([]string{""}, suffixes...) {
			out = append(out, p+string(c)+s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// freshRune is a character in none of the patterns, readable when possible.
func freshRune(used map[rune]bool) rune {
	for _, r := range "zqxjkvwy0123456789" {
		if !used[r] {
			return r
		}
	}
	r := rune(0x100)
	for used[r] {
		r++
	}
	return r
}

// requestsOf gathers the narrowings of one flow: the union of the requests
// of those that hold source s, and whether one of them is Unknown.
func requestsOf(ns []Narrowing, s int) (Requests, bool) {
	var out Requests
	unknown := false
	for _, n := range ns {
		if n.Sources.Has(s) {
			out = append(out, n.Requests...)
			unknown = unknown || n.Unknown
		}
	}
	return out, unknown
}

// RequestDiff is a flow planned and allowed for only some requests, but not
// for the same ones.
type RequestDiff struct {
	Flow
	Planned, Allowed Requests
	// Example is a request on which they differ.
	Example Request
}

func (d RequestDiff) String() string {
	verdict := "planned, denied"
	if d.Allowed.Matches(d.Example) {
		verdict = "allowed, not planned"
	}
	return fmt.Sprintf("%s: planned %s; allowed %s (e.g. %s: %s)", d.Flow, d.Planned, d.Allowed, d.Example, verdict)
}
