package inspector

import (
	"bytes"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
)

// Coraza's multipart and XML body processors never stop at
// SecArgumentsLimit, and every argument they add costs tens of kilobytes
// in the rules: Coraza caches each transformed value per argument, variable
// and transformation prefix for the whole phase. A 869 KB body of 10,000
// one-byte fields took ~900 MB and seconds of CPU. So meshwaf counts the
// parts or XML nodes first, the way the parsers Coraza uses split the
// body, and does not hand Coraza a body over argumentsLimit.

// freePartHeaders is the number of header lines a multipart part may carry
// before each further one counts as one more argument (Content-Disposition,
// Content-Type and Content-Transfer-Encoding are free).
const freePartHeaders = 3

// bodyNodes counts, up to limit+1, the arguments Coraza's body processor
// would add for the body: tx's REQBODY_PROCESSOR and first Content-Type
// header as phase 1 left them, over the body prefix Coraza keeps
// (requestBodyLimit bytes). Other processors stop at the limit themselves
// and count 0 here.
func (c *compiled) bodyNodes(tx types.Transaction, body []byte) int {
	state, ok := tx.(plugintypes.TransactionState)
	if !ok {
		return 0
	}
	vars := state.Variables()
	body = body[:min(len(body), c.profile.RequestBodyLimit)]
	return countBodyNodes(vars.RequestBodyProcessor().Get(), first(vars.RequestHeaders().Get("content-type")),
		body, c.profile.ArgumentsLimit)
}

// countBodyNodes counts, up to limit+1, what the body processor proc adds
// for a body of Content-Type contentType:
//   - MULTIPART: one per part (field, file or nested multipart alike), plus
//     one per part header line past the first freePartHeaders of its part;
//   - XML: one per element, attribute, non-blank text or CDATA section,
//     comment, processing instruction and declaration.
//
// It never counts less than the processors add, and allocates nothing: it
// follows how mime/multipart and encoding/xml, which Coraza's processors
// use, split the body (multipartNodes, xmlNodes). FuzzBodyNodes checks it
// against Coraza.
func countBodyNodes(proc, contentType string, body []byte, limit int) int {
	switch strings.ToUpper(proc) {
	case "MULTIPART":
		return multipartNodes(contentType, body, limit)
	case "XML":
		return xmlNodes(body, limit)
	}
	return 0
}

// multipartNodes counts lines, as mime/multipart (Coraza's reader) reads
// them: a part starts after a delimiter line ("--" boundary, blanks, a line
// end) and its headers run to the first empty line. The reader holds a
// header line up to seven times over while appending its pieces; the count
// holds nothing. Delimiter lines the reader takes for content (or never
// reaches, past an error) count too, which can only count more.
func multipartNodes(contentType string, body []byte, limit int) int {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
		return 0 // Coraza's processor fails before the first part
	}
	dash := []byte("--" + params["boundary"])
	n, headers := 0, -1 // header lines of the current part; -1: not in a header block
	for len(body) > 0 && n <= limit {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i+1], body[i+1:]
		} else {
			body = nil
		}
		switch {
		case isDelimiter(line, dash):
			n++
			headers = 0
		case headers < 0: // preamble, content, epilogue
		case string(line) == "\n" || string(line) == "\r\n":
			headers = -1
		default:
			headers++
			if headers > freePartHeaders {
				n++
			}
		}
	}
	return min(n, limit+1)
}

// isDelimiter reports a multipart delimiter line: dash, then spaces or
// tabs, then "\r\n" or "\n" (the reader takes one of the two).
func isDelimiter(line, dash []byte) bool {
	rest, ok := bytes.CutPrefix(line, dash)
	if !ok {
		return false
	}
	rest = bytes.TrimLeft(rest, " \t")
	return string(rest) == "\r\n" || string(rest) == "\n"
}

// xmlNodes counts like encoding/xml's tokenizer as Coraza sets it up (not
// strict, HTML entities), without allocating: the decoder holds every
// attribute of an element before returning it, 50 bytes and more for each
// two-byte attribute. The scan follows the decoder's token boundaries
// exactly where the decoder succeeds; where it would fail (and Coraza stop
// reading), the scan goes on, which can only count more.
// FuzzBodyNodes checks it against the decoder and Coraza.
func xmlNodes(body []byte, limit int) int {
	n := 0
	for i := 0; i < len(body) && n <= limit; {
		if body[i] != '<' {
			j := indexFrom(body, i, "<")
			if !blank(body[i:j]) {
				n++
			}
			i = j
			continue
		}
		var c int
		i, c = xmlMarkup(body, i)
		n += c
	}
	return min(n, limit+1)
}

// xmlMarkup scans the markup at body[i] == '<' and returns where the next
// token starts and the nodes counted.
func xmlMarkup(body []byte, i int) (next, nodes int) {
	end := len(body)
	if i+1 >= end {
		return end, 0
	}
	switch body[i+1] {
	case '/': // end tag
		return min(indexFrom(body, i+2, ">")+1, end), 0
	case '?': // processing instruction
		return min(indexFrom(body, i+2, "?>")+2, end), 1
	case '!':
		return xmlBang(body, i)
	}
	// Start tag: name, then attributes: name [= value], a value quoted
	// or (not strict) unquoted, a name alone standing for itself.
	p := nameEnd(body, i+1)
	if p == i+1 {
		return p, 0 // the decoder fails here
	}
	nodes = 1
	for {
		p = spaceEnd(body, p)
		if p >= end {
			return end, nodes
		}
		switch body[p] {
		case '/':
			if p+1 < end && body[p+1] == '>' {
				return p + 2, nodes
			}
			return p + 1, nodes
		case '>':
			return p + 1, nodes
		}
		q := nameEnd(body, p)
		if q == p {
			return p, nodes
		}
		nodes++
		p = spaceEnd(body, q)
		if p >= end || body[p] != '=' {
			continue
		}
		p = spaceEnd(body, p+1)
		if p >= end {
			return end, nodes
		}
		if quote := body[p]; quote == '"' || quote == '\'' {
			// Entities never consume a quote or '<'; '<' is an error.
			q := p + 1
			for q < end && body[q] != quote && body[q] != '<' {
				q++
			}
			if q >= end || body[q] == '<' {
				return q, nodes
			}
			p = q + 1
			continue
		}
		for p < end && (isUnquotedByte(body[p])) {
			p++
		}
	}
}

// xmlBang scans "<!": a comment, a CDATA section or a declaration.
func xmlBang(body []byte, i int) (next, nodes int) {
	end := len(body)
	if i+2 >= end {
		return end, 0
	}
	switch body[i+2] {
	case '-':
		if i+3 >= end || body[i+3] != '-' {
			return i + 3, 0
		}
		// The first "--" must be followed by '>'.
		k := indexFrom(body, i+4, "--")
		if k+2 < end && body[k+2] == '>' {
			return k + 3, 1
		}
		return min(k+2, end), 1
	case '[':
		const cdata = "<![CDATA["
		if !bytes.HasPrefix(body[i:], []byte(cdata)) {
			return i + 3, 0
		}
		k := indexFrom(body, i+len(cdata), "]]>")
		if k >= end {
			return end, 0 // no terminator: the decoder fails
		}
		if blank(body[i+len(cdata) : k]) {
			return k + 3, 0
		}
		return k + 3, 1
	}
	// A declaration (<!DOCTYPE ...>): ends at a '>' outside quotes and
	// nested '<'; a nested "<!--" opens a comment up to "-->". The byte
	// after "<!" is taken as it is.
	var inquote byte
	depth := 0
	p := i + 3
	for {
		if p >= end {
			return end, 1
		}
		b := body[p]
		p++
		if inquote == 0 && b == '>' && depth == 0 {
			return p, 1
		}
	handle:
		switch {
		case b == inquote:
			inquote = 0
		case inquote != 0:
		case b == '\'' || b == '"':
			inquote = b
		case b == '>':
			depth--
		case b == '<':
			for k := 0; k < 3; k++ {
				if p >= end {
					return end, 1
				}
				b = body[p]
				p++
				if b != "!--"[k] {
					depth++
					goto handle
				}
			}
			p = min(indexFrom(body, p, "-->")+3, end)
		}
	}
}

// indexFrom returns the index of sep in body at or after i, or len(body).
func indexFrom(body []byte, i int, sep string) int {
	if i >= len(body) {
		return len(body)
	}
	if k := bytes.Index(body[i:], []byte(sep)); k >= 0 {
		return i + k
	}
	return len(body)
}

// nameEnd returns the end of the name at body[i] as the decoder reads
// names: bytes of ASCII name characters and every non-ASCII byte.
func nameEnd(body []byte, i int) int {
	for i < len(body) {
		if c := body[i]; c < utf8.RuneSelf && !isUnquotedByte(c) && c != '.' {
			break
		}
		i++
	}
	return i
}

// spaceEnd skips the decoder's white space.
func spaceEnd(body []byte, i int) int {
	for i < len(body) && (body[i] == ' ' || body[i] == '\r' || body[i] == '\n' || body[i] == '\t') {
		i++
	}
	return i
}

// isUnquotedByte reports a byte of an unquoted attribute value: the ASCII
// name bytes but '.'.
func isUnquotedByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == ':' || c == '-'
}

// blank reports text that is only ASCII white space (so empty once
// trimmed; text with other white space counts, which is safe).
func blank(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r', '\v', '\f':
		default:
			return false
		}
	}
	return true
}
