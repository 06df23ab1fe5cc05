package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Config is everything `meshwaf serve` and `meshwaf inspect` read from the
// config file, the environment and flags, in that order of precedence
// (flags win).
type Config struct {
	GRPCAddress  string `yaml:"grpcAddress"`
	AdminAddress string `yaml:"adminAddress"`
	// DefaultProfile inspects every check that no other profile takes.
	DefaultProfile inspector.Profile `yaml:"defaultProfile"`
	// Profiles are named profiles and the checks they take.
	Profiles []ProfileConfig `yaml:"profiles"`
	// FailOpen allows a request that cannot be inspected; default deny.
	FailOpen bool `yaml:"failOpen"`
	// FailureStatus is the HTTP status of a fail-closed answer.
	FailureStatus int `yaml:"failureStatus"`
	// AuditAllChecks writes an audit line for clean checks too.
	AuditAllChecks bool `yaml:"auditAllChecks"`
	// AuditRawValues logs query values and matched values unmasked.
	AuditRawValues bool `yaml:"auditRawValues"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"logLevel"`
	// MaxMessageBytes bounds one CheckRequest on the wire.
	MaxMessageBytes int `yaml:"maxMessageBytes"`
	// DrainDelay is how long serve reports NOT_SERVING before it stops
	// accepting checks on SIGTERM; ShutdownTimeout bounds the drain of
	// checks in flight after that.
	DrainDelay      Duration `yaml:"drainDelay"`
	ShutdownTimeout Duration `yaml:"shutdownTimeout"`
	// MaxInFlight bounds the inspections running at once, and
	// MaxBodyBytesInFlight the sum of their bodies; 0 derives them from
	// GOMAXPROCS and the memory limit (extauthz.DefaultLimits). A check over
	// a bound waits at most QueueWait, then gets the failure policy.
	MaxInFlight          int      `yaml:"maxInFlight"`
	MaxBodyBytesInFlight int64    `yaml:"maxBodyBytesInFlight"`
	QueueWait            Duration `yaml:"queueWait"`
	// MaxStreams bounds the Check calls open at once, counted before their
	// message is read; 0 derives it (extauthz.StreamsPerInFlight ×
	// maxInFlight).
	MaxStreams int `yaml:"maxStreams"`

	file string     // the config file read, if any
	root *yaml.Node // its YAML tree, to locate errors found later
}

// ProfileConfig is a named profile and what it matches.
type ProfileConfig struct {
	inspector.Profile `yaml:",inline"`
	// Match selects checks by destination identity or Host; a check can
	// also name the profile in the meshwaf-profile context extension.
	Match extauthz.Match `yaml:"match,omitempty"`
}

// Defaults of the fields of Config.
const (
	defaultGRPCAddress     = defaults.GRPCAddress
	defaultAdminAddress    = defaults.AdminAddress
	defaultLogLevel        = "info"
	defaultShutdownTimeout = defaults.ShutdownTimeout
	minMaxMessageBytes     = 4 << 20
)

func defaultConfig() Config {
	return Config{
		GRPCAddress:     defaultGRPCAddress,
		AdminAddress:    defaultAdminAddress,
		FailureStatus:   inspector.DefaultDenyStatus,
		LogLevel:        defaultLogLevel,
		ShutdownTimeout: Duration(defaultShutdownTimeout),
		QueueWait:       Duration(extauthz.DefaultQueueWait),
	}
}

// limits are the admission limits: the settings, and where one is 0, the
// default derived from r.
func (c Config) limits(r extauthz.Resources) extauthz.Limits {
	l := extauthz.DefaultLimits(r)
	if c.MaxInFlight > 0 {
		l.MaxInFlight = c.MaxInFlight
	}
	if c.MaxBodyBytesInFlight > 0 {
		l.MaxBodyBytes = c.MaxBodyBytesInFlight
	}
	l.QueueWait = time.Duration(c.QueueWait)
	l.MaxStreams = extauthz.StreamsPerInFlight * l.MaxInFlight
	if c.MaxStreams > 0 {
		l.MaxStreams = c.MaxStreams
	}
	return l
}

// Duration is a time.Duration written as "15s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &lineError{line: n.Line, err: fmt.Errorf("%q is not a duration like 15s", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// lineError is an error of one of Config's own YAML decoders, at a line;
// decodeConfig names the field there.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

// yaml.v3 reports unknown keys, wrong types and syntax errors only as
// text: these read its line and, for an unknown key, the key.
var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)
	reLine         = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// loadConfigFile decodes path strictly over cfg: an unknown key, a value of
// the wrong type or an invalid setting is an error naming the file, the
// line and the field. All errors are returned at once.
func loadConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return decodeConfig(path, data, cfg)
}

// decodeConfig decodes data, the content of the file name, strictly over
// cfg (see loadConfigFile); each error is a *fielderr.Error.
func decodeConfig(name string, data []byte, cfg *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return yamlErrors(name, err, nil)
	}
	if len(root.Content) == 0 {
		return nil // empty file: defaults
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	next := *cfg
	var errs []error
	if err := dec.Decode(&next); err != nil {
		var le *lineError
		switch {
		case errors.As(err, &le):
			return &fielderr.Error{File: name, Line: le.line, Path: pathAtLine(&root, le.line), Err: le.err}
		case !errors.As(err, new(*yaml.TypeError)):
			return yamlErrors(name, err, &root)
		}
		// Unknown keys and wrong types: the rest was decoded, so its
		// invalid values are reported in the same run.
		errs = fielderr.Split(yamlErrors(name, err, &root))
	}
	next.file, next.root = name, &root
	if errs = append(errs, validateConfig(name, &root, next)...); len(errs) > 0 {
		sortByLine(errs)
		return errors.Join(errs...)
	}
	*cfg = next
	return nil
}

// yamlErrors turns yaml.v3's messages into located errors; root, when
// known, names the field at the line of each error.
func yamlErrors(name string, err error, root *yaml.Node) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var out []error
	for _, m := range msgs {
		if s := reUnknownField.FindStringSubmatch(m); s != nil {
			line, _ := strconv.Atoi(s[1])
			path := pathAtLine(root, line)
			if path == nil {
				path = fielderr.At(s[2])
			}
			out = append(out, &fielderr.Error{File: name, Line: line, Path: path, Err: errors.New("unknown key")})
			continue
		}
		if s := reLine.FindStringSubmatch(m); s != nil {
			line, _ := strconv.Atoi(s[1])
			out = append(out, &fielderr.Error{File: name, Line: line, Path: pathAtLine(root, line),
				Err: errors.New(strings.TrimPrefix(s[2], fmt.Sprintf("line %d: ", line)))})
			continue
		}
		out = append(out, &fielderr.Error{File: name, Err: errors.New(m)})
	}
	return errors.Join(out...)
}

// validateConfig checks the decoded settings, locating each error in the
// file through the YAML node tree.
func validateConfig(name string, root *yaml.Node, c Config) []error {
	var errs []error
	at := func(path fielderr.Path, msg string) {
		errs = append(errs, &fielderr.Error{File: name, Line: lineOf(root, path), Path: path, Err: errors.New(msg)})
	}
	field := fielderr.At
	if c.FailureStatus < 400 || c.FailureStatus > 599 {
		at(field("failureStatus"), fmt.Sprintf("%d is not an HTTP 4xx or 5xx status", c.FailureStatus))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		at(field("logLevel"), fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel))
	}
	for _, a := range []struct{ field, addr string }{{"grpcAddress", c.GRPCAddress}, {"adminAddress", c.AdminAddress}} {
		if err := checkAddress(a.addr); err != nil {
			at(field(a.field), err.Error())
		}
	}
	if c.MaxMessageBytes < 0 {
		at(field("maxMessageBytes"), "must not be negative")
	} else if need, from := c.messageNeed(); c.MaxMessageBytes > 0 && c.MaxMessageBytes < need {
		at(field("maxMessageBytes"), fmt.Sprintf("%d is below %d, the largest requestBodyLimit (%d, %s) plus 64 KiB for headers and framing",
			c.MaxMessageBytes, need, need-checkOverhead, from))
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"drainDelay", c.DrainDelay}, {"shutdownTimeout", c.ShutdownTimeout}} {
		if d.v < 0 {
			at(field(d.field), time.Duration(d.v).String()+" is negative")
		}
	}
	if c.MaxInFlight < 0 {
		at(field("maxInFlight"), "must not be negative")
	}
	if c.MaxBodyBytesInFlight < 0 {
		at(field("maxBodyBytesInFlight"), "must not be negative")
	}
	if c.QueueWait < 0 {
		at(field("queueWait"), "must not be negative")
	}
	if c.MaxStreams < 0 {
		at(field("maxStreams"), "must not be negative")
	} else if c.MaxStreams > 0 && c.MaxInFlight > 0 && c.MaxStreams < c.MaxInFlight {
		at(field("maxStreams"), fmt.Sprintf("%d is below maxInFlight (%d): every inspection needs an open call", c.MaxStreams, c.MaxInFlight))
	}
	if c.DefaultProfile.Name != "" && c.DefaultProfile.Name != inspector.DefaultProfileName {
		at(field("defaultProfile", "name"), fmt.Sprintf("the default profile is named %q; leave name out", inspector.DefaultProfileName))
	}
	validateProfile := func(prefix fielderr.Path, p inspector.Profile) {
		errs = append(errs, locateIn(name, root, prefix, p.WithDefaults().Validate())...)
	}
	validateProfile(field("defaultProfile"), c.DefaultProfile)
	seen := map[string]int{inspector.DefaultProfileName: -1}
	for i, p := range c.Profiles {
		prefix := field("profiles").Index(i)
		if p.Name == "" {
			at(prefix.Field("name"), "every profile needs a name")
			continue
		}
		if j, dup := seen[p.Name]; dup {
			where := "the default profile"
			if j >= 0 {
				where = fmt.Sprintf("profiles[%d]", j)
			}
			at(prefix.Field("name"), fmt.Sprintf("%q is already the name of %s", p.Name, where))
			continue
		}
		seen[p.Name] = i
		validateProfile(prefix, p.Profile)
	}
	return errs
}

// locateIn returns the errors of err with prefix put before their paths,
// each located at the line of its path in the file name with tree root.
func locateIn(name string, root *yaml.Node, prefix fielderr.Path, err error) []error {
	parts := fielderr.Split(fielderr.Prefix(prefix, err))
	for _, e := range parts {
		var fe *fielderr.Error
		errors.As(e, &fe) // Prefix makes every part one
		fe.File, fe.Line = name, lineOf(root, fe.Path)
	}
	return parts
}

// lineOf returns the line of the value at path in a YAML document: of its
// key, or of its list element; of the deepest ancestor found when the path
// goes further than the document; 0 when nothing matches.
func lineOf(root *yaml.Node, path fielderr.Path) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, seg := range path {
		switch seg.Kind {
		case fielderr.IndexKind:
			if n.Kind != yaml.SequenceNode || seg.Index >= len(n.Content) {
				return line
			}
			n = n.Content[seg.Index]
			line = n.Line
		default:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg.Name {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		}
	}
	return line
}

// pathAtLine returns the path of the mapping key on line, or nil.
func pathAtLine(root *yaml.Node, line int) fielderr.Path {
	if root == nil {
		return nil
	}
	var walk func(n *yaml.Node, prefix fielderr.Path) fielderr.Path
	walk = func(n *yaml.Node, prefix fielderr.Path) fielderr.Path {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if p := walk(c, prefix); p != nil {
					return p
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if p := walk(c, prefix.Index(i)); p != nil {
					return p
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path := prefix.Field(k.Value)
				if k.Line == line {
					return path
				}
				if p := walk(v, path); p != nil {
					return p
				}
			}
		}
		return nil
	}
	return walk(root, nil)
}

// locate places err at path in the config file, at the line of path when
// the config came from a file: a *fielderr.Error at path, or several
// joined, when err holds several and has paths of its own (relative to
// path).
func (c Config) locate(path fielderr.Path, err error) error {
	if c.file == "" {
		return fielderr.Prefix(path, err)
	}
	return errors.Join(locateIn(c.file, c.root, path, err)...)
}
