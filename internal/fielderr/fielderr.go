// Package fielderr is the one located-error type of meshwaf: a problem with
// the value at a field path of a document (a config file, a service graph),
// with the path kept as data so that a caller can prefix it when the error
// crosses a level and find the line it points at without parsing messages.
package fielderr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a path segment selects.
type Kind uint8

const (
	// FieldKind selects a mapping key that is a field name (Name).
	FieldKind Kind = iota
	// IndexKind selects an element of a list (Index).
	IndexKind
	// KeyKind selects an entry of a free-form map, such as a label (Name).
	KeyKind
)

// Segment is one step of a Path.
type Segment struct {
	Kind  Kind
	Name  string // the field name or map key
	Index int    // the list index, for IndexKind
}

// Path locates a value in a document, outermost segment first. The zero
// Path is the document itself. Methods never modify the receiver.
type Path []Segment

// At returns the path of nested field names, e.g. At("spec", "services").
func At(fields ...string) Path {
	p := make(Path, len(fields))
	for i, f := range fields {
		p[i] = Segment{Kind: FieldKind, Name: f}
	}
	return p
}

// Field returns p followed by the field name.
func (p Path) Field(name string) Path { return p.with(Segment{Kind: FieldKind, Name: name}) }

// Index returns p followed by the list index i.
func (p Path) Index(i int) Path { return p.with(Segment{Kind: IndexKind, Index: i}) }

// Key returns p followed by the map key k.
func (p Path) Key(k string) Path { return p.with(Segment{Kind: KeyKind, Name: k}) }

// Append returns p followed by every segment of q.
func (p Path) Append(q Path) Path {
	out := make(Path, 0, len(p)+len(q))
	return append(append(out, p...), q...)
}

func (p Path) with(s Segment) Path {
	out := make(Path, len(p), len(p)+1)
	copy(out, p)
	return append(out, s)
}

// String writes p as users read it: fields joined by dots, indices and
// map keys in brackets, e.g. profiles[0].match.hosts.
func (p Path) String() string {
	var b strings.Builder
	for i, s := range p {
		switch s.Kind {
		case IndexKind:
			b.WriteString("[" + strconv.Itoa(s.Index) + "]")
		case KeyKind:
			b.WriteString("[" + s.Name + "]")
		default:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.Name)
		}
	}
	return b.String()
}

// Error is one problem with the value at Path. File, Line and Column
// locate it in a file when known (0 when not); Err is the message, stated
// about the value, without the path.
type Error struct {
	File   string
	Line   int
	Column int
	Path   Path
	Err    error
}

// Errorf returns an Error at p with a message formatted as fmt.Errorf does
// (%w wraps).
func Errorf(p Path, format string, args ...any) *Error {
	return &Error{Path: p, Err: fmt.Errorf(format, args...)}
}

// Error is "file:line:column: path: message", each part left out when
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	if len(e.Path) > 0 {
		sep()
		b.WriteString(e.Path.String())
	}
	sep()
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the message error.
func (e *Error) Unwrap() error { return e.Err }

// Prefix returns err with p put in front of the path of each of its
// errors, for an error that crosses from a part to the whole: every *Error
// of Split(err) is copied with the longer path, and any other error becomes
// an *Error at p. Several errors are joined again; nil stays nil.
func Prefix(p Path, err error) error {
	if err == nil {
		return nil
	}
	parts := Split(err)
	out := make([]error, len(parts))
	for i, e := range parts {
		// Not errors.As: a wrapped *Error keeps its wrapper's words as
		// the message, at p.
		if fe, ok := e.(*Error); ok { //nolint:errorlint // see above
			c := *fe
			c.Path = p.Append(fe.Path)
			out[i] = &c
			continue
		}
		out[i] = &Error{Path: p, Err: e}
	}
	if len(out) == 1 {
		return out[0]
	}
	return errors.Join(out...)
}

// Split returns the errors joined in err (errors.Join, or any error with
// Unwrap() []error), flattened in order; an error of one part is returned
// alone, and nil gives none.
func Split(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, Split(e)...)
	}
	return out
}
