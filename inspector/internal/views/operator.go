package views

import (
	"fmt"
	"strings"
	"sync"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// operatorName is the operator of the rule that starts phase 2 ahead of
// rule pre-selection: it adds the body's extra arguments and never matches.
const operatorName = "meshwafBodyArgs"

// Names of the extra body arguments (their views append ":<suffix>").
const (
	XMLAttribute      = "xml:@"              // an XML attribute value
	XMLText           = "xml:text"           // XML text, named for its views only (CRS reads XML:/*)
	MultipartFileName = "multipart:filename" // a multipart file name
)

// Options say what the phase-2 operator adds.
type Options struct {
	Views         bool // decoded views of body arguments and XML text
	XMLAttributes bool // XML attribute values as arguments
	FileNames     bool // multipart file names as arguments
}

func (o Options) String() string {
	var f []string
	for _, x := range []struct {
		on   bool
		name string
	}{{o.Views, "views"}, {o.XMLAttributes, "xml-attributes"}, {o.FileNames, "file-names"}} {
		if x.on {
			f = append(f, x.name)
		}
	}
	return strings.Join(f, ",")
}

var registerOnce sync.Once

// Register installs the operator in Coraza's registry (process-wide,
// idempotent). Call it before compiling a WAF with Rule's directive.
func Register() {
	registerOnce.Do(func() { plugins.RegisterOperator(operatorName, newOperator) })
}

// Rule returns the phase-2 rule with id that adds what o asks for, or ""
// when o asks for nothing. It must come before every other phase-2 rule
// (rule pre-selection's hook included: it reads what this rule adds).
func Rule(id int, o Options) string {
	if !o.Views && !o.XMLAttributes && !o.FileNames {
		return ""
	}
	return fmt.Sprintf("SecRule REQUEST_LINE \"@%s %s\" \"id:%d,phase:2,pass,nolog,t:none\"\n", operatorName, o, id)
}

type operator struct{ o Options }

func newOperator(opts plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	var o Options
	for _, f := range strings.Split(opts.Arguments, ",") {
		switch strings.TrimSpace(f) {
		case "views":
			o.Views = true
		case "xml-attributes":
			o.XMLAttributes = true
		case "file-names":
			o.FileNames = true
		default:
			return nil, fmt.Errorf("@%s: unknown option %q", operatorName, f)
		}
	}
	return &operator{o: o}, nil
}

// postArgumentAdder is how Coraza's transaction adds a body argument
// within SecArgumentsLimit (flagging ARGUMENTS_LIMIT_REACHED past it).
type postArgumentAdder interface {
	AddPostRequestArgument(key, value string)
}

// Evaluate adds to ARGS_POST, in this order: the XML attribute values and
// multipart file names (per the options), then the decoded views of the
// body arguments, of those and of the XML text. It never matches.
func (op *operator) Evaluate(tx plugintypes.TransactionState, _ string) bool {
	vars := tx.Variables()
	add := func(k, v string) { vars.ArgsPost().Add(k, v) }
	if a, ok := tx.(postArgumentAdder); ok {
		add = a.AddPostRequestArgument
	}
	var out []View
	args := vars.ArgsPost().FindAll()
	if op.o.XMLAttributes {
		for _, v := range vars.RequestXML().Get("//@*") {
			out = append(out, View{Name: XMLAttribute, Value: v})
		}
	}
	if op.o.FileNames {
		for _, md := range vars.Files().FindAll() {
			out = append(out, View{Name: MultipartFileName, Value: md.Value()})
		}
	}
	for _, v := range out {
		add(v.Name, v.Value)
	}
	if !op.o.Views {
		return false
	}
	extra := out
	out = out[len(out):]
	d := NewDecoder(Budget)
	for _, md := range args {
		out = d.Views(out, md.Key(), md.Value())
	}
	for _, v := range extra {
		out = d.Views(out, v.Name, v.Value)
	}
	for _, v := range vars.RequestXML().Get("/*") {
		out = d.Views(out, XMLText, v)
	}
	for _, v := range out {
		add(v.Name, v.Value)
	}
	if sk := d.Skipped(); sk.Any() {
		vars.TX().Set(skippedVar, []string{fmt.Sprintf("%d %d %d %d %d", sk.OverMaxValue, sk.Longest, sk.OverBudget, sk.BudgetViewBytes, sk.OverDepth)})
	}
	return false
}

// skippedVar is the TX variable in which the operator leaves what its
// decoder skipped, for BodySkipped (no CRS rule reads it).
const skippedVar = "meshwaf_views_skipped"

// BodySkipped returns what the phase-2 operator's decoder skipped in tx.
func BodySkipped(vars plugintypes.TransactionVariables) Skipped {
	var sk Skipped
	for _, v := range vars.TX().Get(skippedVar) {
		_, _ = fmt.Sscanf(v, "%d %d %d %d %d", &sk.OverMaxValue, &sk.Longest, &sk.OverBudget, &sk.BudgetViewBytes, &sk.OverDepth)
	}
	return sk
}
