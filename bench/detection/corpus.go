package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"
)

//go:embed corpus/*.jsonl
var corpusFS embed.FS

// Kind says whether an item is an attack or benign traffic.
type Kind string

const (
	Attack Kind = "attack"
	Benign Kind = "benign"
)

// Split is a part of the corpus. Whether an item is held out depends only
// on its text (splitOf), so it never moves when the corpus grows.
type Split string

const (
	SplitTune    Split = "tune"
	SplitHeldOut Split = "heldout"
	// SplitFresh is the held-out items of generation 2 only: the gen-1
	// held-out items were inspected, so they no longer judge changes.
	// It was run once (README, Detection) and is kept as it is so those
	// figures stay reproducible.
	SplitFresh Split = "fresh"
	// SplitFresh3 is the held-out items of generation 3 only, the judge
	// of the changes made after SplitFresh was run. It has been run once.
	SplitFresh3 Split = "fresh3"
	// SplitFresh4 is the held-out items of generation 4 only, the judge
	// of the changes made after SplitFresh3 was run. It has been run once.
	SplitFresh4 Split = "fresh4"
	// SplitFresh5 is the held-out items of generation 5 only, the judge
	// of the changes made after SplitFresh4 was run. It has been run once.
	SplitFresh5 Split = "fresh5"
	// SplitFresh6 is the held-out items of generation 6 only, the judge
	// of the detection changes made after generation 6 was added.
	SplitFresh6 Split = "fresh6"
	SplitAll    Split = "all"
)

// splits are the -split values, in the order the flag's help names them.
func splits() []Split {
	return []Split{SplitTune, SplitHeldOut, SplitFresh, SplitFresh3, SplitFresh4, SplitFresh5, SplitFresh6, SplitAll}
}

// freshGen is the one generation whose held-out items split selects, and
// whether split is such a fresh split.
func freshGen(split Split) (int, bool) {
	switch split {
	case SplitFresh:
		return 2, true
	case SplitFresh3:
		return 3, true
	case SplitFresh4:
		return 4, true
	case SplitFresh5:
		return 5, true
	case SplitFresh6:
		return 6, true
	}
	return 0, false
}

// selects reports whether an item held out or not (held, from splitOf) of
// generation gen belongs to split: all takes every item, a fresh split
// the held-out items of its generation (freshGen), tune and heldout the
// items of that split in every generation.
func selects(split, held Split, gen int) bool {
	if split == SplitAll {
		return true
	}
	if g, ok := freshGen(split); ok {
		return held == SplitHeldOut && gen == g
	}
	return held == split
}

// heldOutTenths of ten items go to the held-out split. Nobody tunes on it.
const heldOutTenths = 3

// splitOf is held-out when the first 8 bytes of sha256(text), big-endian,
// mod 10 are below heldOutTenths; tune otherwise. text is the raw payload
// (encoded variants go with their raw payload) or the benign value.
func splitOf(text string) Split {
	sum := sha256.Sum256([]byte(text))
	if binary.BigEndian.Uint64(sum[:8])%10 < heldOutTenths {
		return SplitHeldOut
	}
	return SplitTune
}

// Item is one corpus entry as sent: an attack payload (maybe encoded) or a
// benign value.
type Item struct {
	Kind     Kind
	Class    string // sqli, xss, ...; text, json, query, ...
	Source   string
	Encoding string // "raw" or one of encodings' names; benign: "raw"
	Text     string // what is placed
	Split    Split  // SplitTune or SplitHeldOut
	Gen      int    // corpus generation, 1 (first) or later
}

type line struct {
	Class   string `json:"class"`
	Source  string `json:"source"`
	Payload string `json:"payload"`
	Value   string `json:"value"`
	// Gen is the corpus generation; absent means 1.
	Gen *int `json:"gen"`
}

// gen is l's generation: 1 when absent; an error unless positive.
func (l line) gen() (int, error) {
	if l.Gen == nil {
		return 1, nil
	}
	if *l.Gen < 1 {
		return 0, fmt.Errorf("gen %d is not positive", *l.Gen)
	}
	return *l.Gen, nil
}

// loadCorpus reads the attack files (attacks.jsonl, seeds.jsonl) and
// benign.jsonl from fsys, adds the encoded variants of every attack, and
// keeps the items split selects (selects).
func loadCorpus(fsys fs.FS, split Split) ([]Item, error) {
	var items []Item
	for _, f := range []struct {
		name string
		kind Kind
	}{{"corpus/attacks.jsonl", Attack}, {"corpus/seeds.jsonl", Attack}, {"corpus/benign.jsonl", Benign}} {
		b, err := fs.ReadFile(fsys, f.name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", f.name, n, err)
			}
			text := l.Payload
			if f.kind == Benign {
				text = l.Value
			}
			if l.Class == "" || text == "" {
				return nil, fmt.Errorf("%s:%d: no class or text", f.name, n)
			}
			gen, err := l.gen()
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", f.name, n, err)
			}
			s := splitOf(text)
			if !selects(split, s, gen) {
				continue
			}
			items = append(items, Item{Kind: f.kind, Class: l.Class, Source: l.Source, Encoding: "raw", Text: text, Split: s, Gen: gen})
			if f.kind == Attack && encodable(l.Class) {
				for _, e := range encodings {
					items = append(items, Item{Kind: Attack, Class: l.Class, Source: l.Source, Encoding: e.name, Text: e.encode(text), Split: s, Gen: gen})
				}
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return items, nil
}

// encodable: XXE payloads are whole documents, sent only as an XML body;
// encoding them makes no document.
func encodable(class string) bool { return class != "xxe" }

// encodings are the evasions CRS does not undo, applied to the raw
// payload before it is placed (the placement then applies its own
// transport encoding: percent-encoding in a query, escaping in XML).
var encodings = []struct {
	name   string
	encode func(string) string
}{
	{"base64", func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }},
	// double-url: still percent-encoded after the placement's one decode.
	{"double-url", func(s string) string { return percentAll(s, "%%%02X") }},
	{"u-escape", uEscape},
	{"full-width", fullWidth},
	{"html-entity", htmlEntity},
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// percentAll percent-encodes every byte but the unreserved ones.
func percentAll(s, format string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if unreserved(s[i]) {
			b.WriteByte(s[i])
		} else {
			fmt.Fprintf(&b, format, s[i])
		}
	}
	return b.String()
}

// uEscape writes every rune but the unreserved ASCII ones as %uXXXX (IIS);
// runes beyond the BMP as two surrogate escapes.
func uEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf && unreserved(byte(r)):
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, "%%u%04X%%u%04X", 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, "%%u%04X", r)
		}
	}
	return b.String()
}

// fullWidth maps printable ASCII to its full-width form (U+FF01-FF5E, and
// U+3000 for the space), which NFKC maps back.
func fullWidth(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == ' ':
			b.WriteRune('\u3000')
		case r > ' ' && r < 0x7F:
			b.WriteRune(r - 0x21 + 0xFF01)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// htmlEntity writes every rune but letters, digits and the space as a
// hexadecimal character reference.
func htmlEntity(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == ' ' || r < utf8.RuneSelf && unreserved(byte(r)) && r != '.' && r != '-' && r != '_' && r != '~' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "&#x%X;", r)
		}
	}
	return b.String()
}
