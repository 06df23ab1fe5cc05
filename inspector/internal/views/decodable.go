package views

import (
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Decodable reports whether a decoding applies to s: whether Views would
// give s at least one view, were it not for MaxValue and the budget. It
// decides as the decoders do, in time linear in len(s) and without holding
// a decoded copy of s (base64 is decoded a chunk at a time, HTML entities
// in pieces of 4 KiB).
func Decodable(s string) bool {
	return candidate(s) && (base64Printable(s) || percentAt(s) || uniIn(s) || nfkcFolds(s) || htmlEntityIn(s))
}

// base64Printable reports whether decodeBase64(s) succeeds.
func base64Printable(s string) bool {
	body, enc, ok := base64Text(s)
	if !ok {
		return false
	}
	const chunk = 4 << 10 // base64 characters per step: a multiple of 4
	var buf [chunk/4*3 + utf8.UTFMax]byte
	carry, total, bad := 0, 0, 0
	for len(body) > 0 {
		part := body[:min(len(body), chunk)]
		body = body[len(part):]
		n, err := enc.Decode(buf[carry:], []byte(part))
		if err != nil {
			return false
		}
		b := buf[:carry+n]
		for len(b) > 0 {
			r, size := utf8.DecodeRune(b)
			if r == utf8.RuneError && size <= 1 {
				if len(body) > 0 && !utf8.FullRune(b) {
					break // a rune cut by the chunk: decoded with the next one
				}
				return false
			}
			if r == 0 {
				return false
			}
			total++
			if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
				bad++
			}
			b = b[size:]
		}
		carry = copy(buf[:], b)
	}
	return carry == 0 && total > 0 && float64(total-bad) >= printableShare*float64(total)
}

// percentAt reports whether decodePercent changes s: it has a %XX.
func percentAt(s string) bool { return anyPercent(s, hexAt) }

// uniIn reports whether decodeUni changes s: it has a %uXXXX.
func uniIn(s string) bool { return anyPercent(s, uniAt) }

// anyPercent reports whether at(s, i) holds at one of the '%' of s.
func anyPercent(s string, at func(s string, i int) bool) bool {
	for i := strings.IndexByte(s, '%'); i >= 0; {
		if at(s, i) {
			return true
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// nfkcFolds reports whether foldNFKC changes s.
func nfkcFolds(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return !norm.NFKC.IsNormalString(s)
		}
	}
	return false
}

// entityWindow holds any character reference html.UnescapeString decodes
// the same way as in the whole text: names are at most 32 characters (and
// a longer run of letters only decodes by its first 6), numbers decode
// whatever digits follow their first.
const entityWindow = 64

// htmlEntityIn reports whether unescapeHTML changes s: a character
// reference decodes at one of its '&'. s is unescaped in pieces of about
// 4 KiB that end before an '&' (a reference never reaches past the next
// '&'), the last one entityWindow bytes after its last '&'.
func htmlEntityIn(s string) bool {
	const chunk = 4 << 10
	for i := strings.IndexByte(s, '&'); i >= 0; {
		from := min(len(s), i+chunk)
		end := len(s)
		if next := strings.IndexByte(s[from:], '&'); next >= 0 {
			end = from + next
		} else if last := i + strings.LastIndexByte(s[i:], '&'); last+entityWindow < end {
			end = last + entityWindow
		}
		if p := s[i:end]; html.UnescapeString(p) != p {
			return true
		}
		next := strings.IndexByte(s[end:], '&')
		if next < 0 {
			return false
		}
		i = end + next
	}
	return false
}
