package meshpolicy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Load reads, decodes and validates the graph file at path.
func Load(path string) (*Graph, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data)
}

// Decode decodes one ServiceGraph document strictly (an unknown key is an
// error), fills in defaults and validates it. On failure the error is an
// ErrorList with every problem found, each naming file, line, column and
// field path.
func Decode(file string, data []byte) (*Graph, error) {
	d := &decoder{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ErrorList{d.syntaxError(err)}
		}
		docs = append(docs, &n)
	}
	switch {
	case len(docs) == 0 || len(docs[0].Content) == 0:
		return nil, ErrorList{{File: file, Err: errors.New("empty file: want a ServiceGraph document")}}
	case len(docs) > 1:
		n := docs[1]
		return nil, ErrorList{{File: file, Line: n.Line, Column: n.Column, Err: errors.New("more than one YAML document: want one ServiceGraph")}}
	}
	return d.decode(docs[0].Content[0])
}

// DecodeNode is Decode of a document's root node, parsed or built (a
// built node has no lines and columns for errors to name).
func DecodeNode(file string, root *yaml.Node) (*Graph, error) {
	d := &decoder{file: file}
	return d.decode(root)
}

func (d *decoder) decode(root *yaml.Node) (*Graph, error) {
	g := d.graph(root)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool {
			a, b := d.errs[i], d.errs[j]
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Column < b.Column
		})
		return nil, d.errs
	}
	return g, nil
}

var reSyntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) syntaxError(err error) *fielderr.Error {
	msg := err.Error()
	if s := reSyntaxLine.FindStringSubmatch(msg); s != nil {
		line, _ := strconv.Atoi(s[1])
		return &fielderr.Error{File: d.file, Line: line, Err: errors.New("invalid YAML: " + s[2])}
	}
	return &fielderr.Error{File: d.file, Err: errors.New("invalid YAML: " + strings.TrimPrefix(msg, "yaml: "))}
}

type decoder struct {
	file string
	errs ErrorList
}

func (d *decoder) fail(n *yaml.Node, path fielderr.Path, format string, args ...any) {
	e := &fielderr.Error{File: d.file, Path: path, Err: fmt.Errorf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// fields checks that n is a mapping with only the known keys, each once,
// and returns the value node of each key present.
func (d *decoder) fields(n *yaml.Node, path fielderr.Path, known ...string) map[string]*yaml.Node {
	n = deref(n)
	out := map[string]*yaml.Node{}
	if isNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping, got %s", describe(n))
		return out
	}
	keyLine := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := path.Field(k.Value)
		if !contains(known, k.Value) {
			d.fail(k, kp, "unknown key (known: %s)", strings.Join(known, ", "))
			continue
		}
		if l, dup := keyLine[k.Value]; dup {
			d.fail(k, kp, "duplicate key (first on line %d)", l)
			continue
		}
		keyLine[k.Value] = k.Line
		out[k.Value] = v
	}
	return out
}

func (d *decoder) str(n *yaml.Node, path fielderr.Path) string {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.fail(n, path, "want a string, got %s", describe(n))
		return ""
	}
	return n.Value
}

func (d *decoder) integer(n *yaml.Node, path fielderr.Path) (int, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		d.fail(n, path, "want an integer, got %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil || v < -1<<31 || v > 1<<31-1 {
		d.fail(n, path, "%s is out of range", n.Value)
		return 0, false
	}
	return int(v), true
}

func (d *decoder) port(n *yaml.Node, path fielderr.Path) (int, bool) {
	p, ok := d.integer(n, path)
	if ok && (p < 1 || p > 65535) {
		d.fail(deref(n), path, "port %d is not between 1 and 65535", p)
		return 0, false
	}
	return p, ok
}

func (d *decoder) boolean(n *yaml.Node, path fielderr.Path) bool {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.fail(n, path, "want true or false, got %s", describe(n))
		return false
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
}

func (d *decoder) seq(n *yaml.Node, path fielderr.Path) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "want a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

// labels decodes a label map (selector) and checks keys and values.
func (d *decoder) labels(n *yaml.Node, path fielderr.Path) map[string]string {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of labels, got %s", describe(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		kp := path.Key(k.Value)
		if _, dup := out[k.Value]; dup {
			d.fail(k, kp, "duplicate label key")
			continue
		}
		if msgs := validation.IsQualifiedName(k.Value); len(msgs) > 0 {
			d.fail(k, kp, "invalid label key %q: %s", k.Value, strings.Join(msgs, "; "))
		}
		val := d.str(v, kp)
		if v.Kind == yaml.ScalarNode && v.Tag == "!!str" {
			if msgs := validation.IsValidLabelValue(val); len(msgs) > 0 {
				d.fail(v, kp, "invalid label value %q: %s", val, strings.Join(msgs, "; "))
			}
		}
		out[k.Value] = val
	}
	if len(out) == 0 {
		d.fail(n, path, "must not be empty (an empty selector selects every pod)")
	}
	return out
}

func (d *decoder) dnsLabel(n *yaml.Node, path fielderr.Path, what string) string {
	s := d.str(n, path)
	if s == "" && deref(n).Tag != "!!str" {
		return ""
	}
	if msgs := validation.IsDNS1123Label(s); len(msgs) > 0 {
		d.fail(deref(n), path, "invalid %s %q: %s", what, s, strings.Join(msgs, "; "))
	}
	return s
}

func (d *decoder) dnsSubdomain(n *yaml.Node, path fielderr.Path, what string) string {
	s := d.str(n, path)
	if s == "" && deref(n).Tag != "!!str" {
		return ""
	}
	if msgs := validation.IsDNS1123Subdomain(s); len(msgs) > 0 {
		d.fail(deref(n), path, "invalid %s %q: %s", what, s, strings.Join(msgs, "; "))
	}
	return s
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!str":
			return fmt.Sprintf("string %q", n.Value)
		}
		return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	}
	return "an unexpected node"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
