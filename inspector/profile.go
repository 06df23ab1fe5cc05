package inspector

import (
	"errors"
	"regexp"

	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// reProfileName bounds profile names: they are metric label values.
var reProfileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Mode says what a profile does with a request the rules would deny.
type Mode string

const (
	// ModeBlock denies requests whose anomaly score reaches the threshold.
	ModeBlock Mode = "block"
	// ModeDetect never denies; it reports what would have been denied.
	ModeDetect Mode = "detect"
)

// Defaults for a profile's zero fields.
const (
	DefaultProfileName             = "default"
	DefaultParanoiaLevel           = 1
	DefaultInboundAnomalyThreshold = 5
	DefaultMode                    = ModeBlock
	DefaultRequestBodyLimit        = defaults.RequestBodyLimit // 1 MiB
	DefaultArgumentsLimit          = 1000
	DefaultDenyStatus              = 403
	// MaxRequestBodyLimit bounds the memory one check may hold for a body.
	MaxRequestBodyLimit = 64 << 20
)

// Profile is one inspection policy. Zero fields take the defaults above when
// the profile is compiled; a Profile is a value and is never mutated by the
// engine.
type Profile struct {
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// ParanoiaLevel is CRS's blocking and detection paranoia level, 1-4.
	ParanoiaLevel int `yaml:"paranoiaLevel,omitempty" json:"paranoiaLevel,omitempty"`
	// InboundAnomalyThreshold is CRS's inbound_anomaly_score_threshold.
	InboundAnomalyThreshold int `yaml:"inboundAnomalyThreshold,omitempty" json:"inboundAnomalyThreshold,omitempty"`
	// Mode is block or detect.
	Mode Mode `yaml:"mode,omitempty" json:"mode,omitempty"`
	// RequestBodyLimit is the number of body bytes inspected.
	RequestBodyLimit int `yaml:"requestBodyLimit,omitempty" json:"requestBodyLimit,omitempty"`
	// ArgumentsLimit is Coraza's SecArgumentsLimit, and the most parts of a
	// multipart body or nodes of an XML body that are parsed (bodyguard.go),
	// and the most cookies and, apart, request headers (headerguard.go).
	ArgumentsLimit int `yaml:"argumentsLimit,omitempty" json:"argumentsLimit,omitempty"`
	// AllowArgumentsOverLimit passes requests with more arguments than
	// ArgumentsLimit (the extra ones are not inspected). Off by default.
	// Multipart and XML bodies, cookies and headers over the limit are
	// denied all the same.
	AllowArgumentsOverLimit bool `yaml:"allowArgumentsOverLimit,omitempty" json:"allowArgumentsOverLimit,omitempty"`
	// AllowPartialBody passes requests whose body was only partly inspected
	// (cut by the proxy, or longer than RequestBodyLimit). Off by default.
	AllowPartialBody bool `yaml:"allowPartialBody,omitempty" json:"allowPartialBody,omitempty"`
	// DenyStatus is the HTTP status of a denial.
	DenyStatus int `yaml:"denyStatus,omitempty" json:"denyStatus,omitempty"`
	// BeforeCRS is SecLang loaded after crs-setup and before the CRS rules.
	BeforeCRS string `yaml:"beforeCRS,omitempty" json:"beforeCRS,omitempty"`
	// AfterCRS is SecLang loaded after the CRS rules (exclusions).
	AfterCRS string `yaml:"afterCRS,omitempty" json:"afterCRS,omitempty"`
	// Exclusions are structured exclusions compiled to SecLang.
	Exclusions []Exclusion `yaml:"exclusions,omitempty" json:"exclusions,omitempty"`
	// Preselect turns rule pre-selection off when false (default on): every
	// rule is then evaluated for every request. Verdicts are the same
	// either way; it exists for measurement and as an escape hatch.
	Preselect *bool `yaml:"preselect,omitempty" json:"preselect,omitempty"`
	// PreselectCanary makes 1 in this many checks also run every rule and
	// compare: any disagreement is reported (Verdict.Preselect) and the full
	// evaluation's verdict wins. 0 (the default) turns the canary off.
	PreselectCanary int `yaml:"preselectCanary,omitempty" json:"preselectCanary,omitempty"`
	// RulePack turns meshwaf's rule pack (inspector/rulepack) off when
	// false (default on).
	RulePack *bool `yaml:"rulePack,omitempty" json:"rulePack,omitempty"`
	// Corroboration makes CRS rules prone to false positives on natural
	// language score only when corroborated, and runs selected
	// paranoia-level-2 rules the same way (corroborate.go). Default on; it
	// applies at paranoia level 1 only.
	Corroboration *bool `yaml:"corroboration,omitempty" json:"corroboration,omitempty"`

	// Inspection beyond CRS (beyond.go), on by default; CRSOnly turns it all off.
	// DecodedViews adds the decoded text of encoded argument, cookie and
	// header-as-argument values as extra arguments ("<name>:b64", ...).
	DecodedViews *bool `yaml:"decodedViews,omitempty" json:"decodedViews,omitempty"`
	// HeadersAsArgs inspects request headers carrying caller data as arguments.
	HeadersAsArgs HeadersAsArgs `yaml:"headersAsArgs,omitempty" json:"headersAsArgs,omitempty"`
	// XMLAttributes inspects XML attribute values as arguments ("xml:@").
	XMLAttributes *bool `yaml:"xmlAttributes,omitempty" json:"xmlAttributes,omitempty"`
	// FileNames inspects multipart file names as arguments ("multipart:filename").
	FileNames *bool `yaml:"fileNames,omitempty" json:"fileNames,omitempty"`
	// AllowXMLDeclarations passes request bodies with an XML DOCTYPE or
	// ENTITY declaration; off by default (rule 99003 denies them).
	AllowXMLDeclarations bool `yaml:"allowXMLDeclarations,omitempty" json:"allowXMLDeclarations,omitempty"`
	// AllowUndecodedViews passes requests with encoded values that got no
	// decoded view because of a bound of the decoding (Verdict.UndecodedViews
	// counts them); off by default (rule 99004 denies them).
	AllowUndecodedViews bool `yaml:"allowUndecodedViews,omitempty" json:"allowUndecodedViews,omitempty"`
}

// RulePackOn reports whether p loads meshwaf's rule pack.
func (p Profile) RulePackOn() bool { return p.RulePack == nil || *p.RulePack }

// WithDefaults returns p with zero fields set to the defaults.
func (p Profile) WithDefaults() Profile {
	if p.Name == "" {
		p.Name = DefaultProfileName
	}
	if p.ParanoiaLevel == 0 {
		p.ParanoiaLevel = DefaultParanoiaLevel
	}
	if p.InboundAnomalyThreshold == 0 {
		p.InboundAnomalyThreshold = DefaultInboundAnomalyThreshold
	}
	if p.Mode == "" {
		p.Mode = DefaultMode
	}
	if p.RequestBodyLimit == 0 {
		p.RequestBodyLimit = DefaultRequestBodyLimit
	}
	if p.ArgumentsLimit == 0 {
		p.ArgumentsLimit = DefaultArgumentsLimit
	}
	if p.DenyStatus == 0 {
		p.DenyStatus = DefaultDenyStatus
	}
	return p
}

// Validate reports every invalid field of p (after defaults) at once, each
// a *fielderr.Error whose path is relative to the profile.
func (p Profile) Validate() error {
	var errs []error
	if p.ParanoiaLevel < 1 || p.ParanoiaLevel > 4 {
		errs = append(errs, fielderr.Errorf(fielderr.At("paranoiaLevel"), "%d is not between 1 and 4", p.ParanoiaLevel))
	}
	if p.InboundAnomalyThreshold < 1 {
		errs = append(errs, fielderr.Errorf(fielderr.At("inboundAnomalyThreshold"), "%d is not positive", p.InboundAnomalyThreshold))
	}
	if p.Mode != ModeBlock && p.Mode != ModeDetect {
		errs = append(errs, fielderr.Errorf(fielderr.At("mode"), "%q is neither %q nor %q", p.Mode, ModeBlock, ModeDetect))
	}
	if p.RequestBodyLimit < 1 || p.RequestBodyLimit > MaxRequestBodyLimit {
		errs = append(errs, fielderr.Errorf(fielderr.At("requestBodyLimit"), "%d is not between 1 and %d", p.RequestBodyLimit, MaxRequestBodyLimit))
	}
	if p.ArgumentsLimit < 1 {
		errs = append(errs, fielderr.Errorf(fielderr.At("argumentsLimit"), "%d is not positive", p.ArgumentsLimit))
	}
	if p.PreselectCanary < 0 {
		errs = append(errs, fielderr.Errorf(fielderr.At("preselectCanary"), "%d is negative (0 turns the canary off)", p.PreselectCanary))
	}
	if p.DenyStatus < 400 || p.DenyStatus > 599 {
		errs = append(errs, fielderr.Errorf(fielderr.At("denyStatus"), "%d is not an HTTP 4xx or 5xx status", p.DenyStatus))
	}
	if !reProfileName.MatchString(p.Name) {
		errs = append(errs, fielderr.Errorf(fielderr.At("name"), "%q is not a profile name (letters, digits, '-', '_', '.'; at most 63)", p.Name))
	}
	if err := p.HeadersAsArgs.validate(); err != nil {
		errs = append(errs, err)
	}
	for i, e := range p.Exclusions {
		if err := e.validate(); err != nil {
			errs = append(errs, fielderr.Prefix(fielderr.At("exclusions").Index(i), err))
		}
	}
	return errors.Join(errs...)
}
