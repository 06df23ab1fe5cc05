package preselect

import (
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/net/html"
)

// transform is a partial copy of one of Coraza's transformations: where ok
// is true, out is exactly what Coraza's transformation of that name
// returns for in, and if out differs from in Coraza reports a change
// (under multiMatch Coraza skips a step it reports unchanged and goes on
// from the earlier value); where ok is false the value is not modelled and
// every rule that would see it is kept. Each is checked against Coraza's
// own output by TestTransformsMatchCoraza and FuzzTransforms.
type transform func(in string) (out string, ok bool)

// transforms holds the modelled transformations by lower-cased name.
var transforms = map[string]transform{
	"lowercase":          func(s string) (string, bool) { return strings.ToLower(s), true },
	"removenulls":        func(s string) (string, bool) { return strings.ReplaceAll(s, "\x00", ""), true },
	"removewhitespace":   removeWhitespace,
	"htmlentitydecode":   htmlEntityDecode,
	"length":             func(s string) (string, bool) { return strconv.Itoa(len(s)), true },
	"urldecodeuni":       urlDecodeNoPercent,
	"urldecode":          urlDecodeNoPercent,
	"utf8tounicode":      asciiIdentity,
	"jsdecode":           noBackslashIdentity,
	"cssdecode":          noBackslashIdentity,
	"escapeseqdecode":    noBackslashIdentity,
	"compresswhitespace": compressWhitespace,
	"cmdline":            cmdLine,
	"replacecomments":    replaceComments,
	"removecommentschar": removeCommentsChar,
	"normalizepath":      normalizePath,
	"normalisepath":      normalizePath,
	"normalizepathwin":   normalizePathWin,
	"normalisepathwin":   normalizePathWin,
}

// htmlEntityDecode is html.UnescapeString. Coraza reports a change only
// when the length changes: a change that keeps it ("&#0" becomes U+FFFD)
// is not modelled.
func htmlEntityDecode(s string) (string, bool) {
	out := html.UnescapeString(s)
	if len(out) == len(s) && out != s {
		return "", false
	}
	return out, true
}

// removeWhitespace drops every rune unicode.IsSpace reports. strings.Map
// also turns invalid UTF-8 into U+FFFD, a change Coraza reports only when
// a space was dropped too: without one, such a value is not modelled.
func removeWhitespace(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || asciiSpace(c) {
			dropped := false
			out := strings.Map(func(r rune) rune {
				if unicode.IsSpace(r) {
					dropped = true
					return -1
				}
				return r
			}, s)
			if !dropped && out != s {
				return "", false
			}
			return out, true
		}
	}
	return s, true
}

func asciiSpace(c byte) bool {
	switch c {
	case '\t', '\n', '\v', '\f', '\r', ' ':
		return true
	}
	return false
}

// urlDecodeNoPercent models URL decoding of values without '%': each '+'
// becomes a space.
func urlDecodeNoPercent(s string) (string, bool) {
	if strings.IndexByte(s, '%') >= 0 {
		return "", false
	}
	return strings.ReplaceAll(s, "+", " "), true
}

// asciiIdentity models transformations that leave ASCII unchanged.
func asciiIdentity(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", false
		}
	}
	return s, true
}

// noBackslashIdentity models escape decoders: without a backslash there is
// nothing to decode.
func noBackslashIdentity(s string) (string, bool) {
	if strings.IndexByte(s, '\\') >= 0 {
		return "", false
	}
	return s, true
}

// compressWhitespace turns each run of ASCII whitespace into one space;
// values with other bytes than ASCII are not modelled (NEL and NBSP count
// as whitespace there).
func compressWhitespace(s string) (string, bool) {
	needed := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return "", false
		}
		if asciiSpace(c) && (c != ' ' || i+1 < len(s) && asciiSpace(s[i+1])) {
			needed = true
		}
	}
	if !needed {
		return s, true
	}
	b := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; !asciiSpace(c) {
			b = append(b, c)
			space = false
		} else if !space {
			b = append(b, ' ')
			space = true
		}
	}
	return string(b), true
}

// cmdLine is ModSecurity's cmdLine: delete \ " ' ^; turn each run of
// spaces, tabs, CR, LF, commas and semicolons into one space; delete that
// space before / and (; lower-case A-Z.
func cmdLine(s string) (string, bool) {
	changes := false
	for i := 0; i < len(s) && !changes; i++ {
		switch c := s[i]; {
		case c == '"' || c == '\'' || c == '\\' || c == '^' || c == ',' || c == ';' ||
			c == '\t' || c == '\r' || c == '\n' || 'A' <= c && c <= 'Z':
			changes = true
		case c == ' ':
			changes = i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '/' || s[i+1] == '(' ||
				s[i+1] == ',' || s[i+1] == ';' || s[i+1] == '\t' || s[i+1] == '\r' || s[i+1] == '\n'
		}
	}
	if !changes {
		return s, true
	}
	b := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"', '\'', '\\', '^':
		case ' ', ',', ';', '\t', '\r', '\n':
			if !space {
				b = append(b, ' ')
				space = true
			}
		case '/', '(':
			if space {
				b = b[:len(b)-1]
			}
			space = false
			b = append(b, c)
		default:
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
			space = false
		}
	}
	return string(b), true
}

// replaceComments models values without "/*", which it leaves unchanged.
func replaceComments(s string) (string, bool) {
	if strings.Contains(s, "/*") {
		return "", false
	}
	return s, true
}

// removeCommentsChar models values without any of the comment markers it
// deletes (/* */ <!-- --> -- #).
func removeCommentsChar(s string) (string, bool) {
	if strings.Contains(s, "/*") || strings.Contains(s, "*/") || strings.Contains(s, "<!--") ||
		strings.Contains(s, "--") || strings.IndexByte(s, '#') >= 0 {
		return "", false
	}
	return s, true
}

// normalizePath cleans the path lexically, keeping a trailing slash; a
// path that cleans to "." becomes empty.
func normalizePath(s string) (string, bool) {
	if s == "" {
		return s, true
	}
	clean := filepath.Clean(s)
	if clean == "." {
		return "", true
	}
	if s[len(s)-1] == '/' {
		return clean + "/", true
	}
	return clean, true
}

// normalizePathWin models values without backslashes or colons (which it
// would turn into slashes or read as a drive or an NTFS stream): for those
// it is normalizePath, unless a cleaned path segment ends in a dot or a
// space (Windows strips those; not modelled), segments of dots only aside.
func normalizePathWin(s string) (string, bool) {
	if strings.ContainsAny(s, "\\:") {
		return "", false
	}
	clean, _ := normalizePath(s)
	for seg := range strings.SplitSeq(clean, "/") {
		if seg == "" || strings.Trim(seg, ".") == "" {
			continue
		}
		if c := seg[len(seg)-1]; c == '.' || c == ' ' {
			return "", false
		}
	}
	return clean, true
}
