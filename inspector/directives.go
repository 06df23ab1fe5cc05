package inspector

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/corazawaf/coraza-coreruleset/v4"

	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody"
	"github.com/meshwaf/meshwaf/inspector/internal/views"
	"github.com/meshwaf/meshwaf/inspector/rulepack"
)

// Rule ids of meshwaf's own guards (ModSecurity's local-use id range). No
// SecLang rule has them: transaction.go reports them as findings.
const (
	RuleArgumentsLimit = 99001 // more arguments than SecArgumentsLimit
	RulePartialBody    = 99002 // body cut by the proxy or over the body limit
	// RuleXMLDeclaration = 99003, RuleUndecodedViews = 99004 (beyond.go)
)

// Rule ids of the SecLang rules Directives writes (exclusion.go numbers its
// rules from exclusionRuleBase on).
const (
	ruleXMLProcessor        = 200000 // XML content types: body processor XML
	ruleJSONProcessor       = 200001 // application/json: body processor JSON
	ruleRequestBodyError    = 200002 // denies a body the processor could not read
	ruleMultipartStrict     = 200003 // denies a multipart body failing strict validation
	ruleJSONSuffixProcessor = 200006 // application/*+json: body processor JSON
	ruleSetParanoia         = 99100  // paranoia levels and the body limit (txBodyLimit)
	ruleSetThreshold        = 99101  // inbound anomaly score threshold
	ruleSetMethods          = 99102  // allowed methods
	ruleSetContentTypes     = 99103  // allowed request content types
	ruleGRPCProcessor       = 99104  // gRPC content types: body processor GRPC
	ruleGRPCRaw             = 99105  // grpcbody.RawRule
	rulePreselectPhase1     = 99110  // first rule of phase 1: rule pre-selection (preselect.go)
	rulePreselectPhase2     = 99111  // first rule of phase 2: rule pre-selection
	ruleBodyArgs            = 99112  // first rule of phase 2, before pre-selection: body arguments (views)
	ruleDistinctKeysPhase1  = 99113  // first rule of phase 1: distinct key strings (internal/distinctkeys)
	ruleDistinctKeysPhase2  = 99114  // phase 2, right after ruleBodyArgs: distinct key strings
)

// TX variables meshwaf's rules set for CRS and for the GRPC body processor,
// and the one the verdict reads.
const (
	txBlockingParanoia    = "blocking_paranoia_level"
	txDetectionParanoia   = "detection_paranoia_level"
	txBodyLimit           = grpcbody.BodyLimitVar
	txAnomalyThreshold    = "inbound_anomaly_score_threshold"
	txAllowedMethods      = "allowed_methods"
	txAllowedContentTypes = "allowed_request_content_type"
	txAnomalyScore        = "blocking_inbound_anomaly_score" // CRS's score, read by the verdict
)

// Mesh defaults that differ from CRS's: East/West traffic is mostly APIs,
// so PUT, PATCH and DELETE and the API and gRPC content types are normal.
// gRPC bodies are protobuf: the GRPC body processor (internal/grpcbody)
// makes their string fields ARGS. A profile's beforeCRS may set these tx
// variables again.
const (
	meshAllowedMethods      = "GET HEAD POST PUT PATCH DELETE OPTIONS"
	meshAllowedContentTypes = "|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json| |application/merge-patch+json| |application/json-patch+json| |application/cloudevents+json| |application/cloudevents-batch+json| |application/grpc| |application/grpc+proto| |application/grpc-web| |application/grpc-web+proto|"
)

// Directives returns the SecLang that Compile loads for p (after defaults),
// but rule pre-selection's hooks: the rule adding body arguments (when p
// asks for any; internal/views), engine and body settings, the body processor rules, the CRS setup,
// meshwaf's tx settings, the profile's beforeCRS and exclusions, the CRS
// request rules (with meshwaf's rule pack before CRS's blocking evaluation
// unless the profile turns it off, and corroboration's rules), the
// profile's afterCRS, the removal of the paranoia-level-2 rules
// corroboration does not select (corroborate.go).
func Directives(p Profile) string { return directives(p, "") }

// directives is Directives with hooks (distinct key strings' and rule
// pre-selection's) after the body-arguments rule and before every other
// rule.
func directives(p Profile, hooks string) string {
	engine := "On"
	if p.Mode == ModeDetect {
		engine = "DetectionOnly"
	}
	var b strings.Builder
	b.WriteString(views.Rule(ruleBodyArgs, p.bodyArgs()))
	b.WriteString(hooks)
	fmt.Fprintf(&b, `SecRuleEngine %s
SecRequestBodyAccess On
SecRequestBodyLimit %d
SecRequestBodyInMemoryLimit %d
SecRequestBodyLimitAction ProcessPartial
SecRequestBodyJsonDepthLimit 1024
SecArgumentsLimit %d
SecResponseBodyAccess Off
SecAuditEngine Off
`, engine, p.RequestBodyLimit, p.RequestBodyLimit, p.ArgumentsLimit)
	fmt.Fprintf(&b, `SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:%d,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:%d,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:%d,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:%d,phase:2,t:none,log,deny,status:%d,msg:'Failed to parse request body.',logdata:'%%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:%d,phase:2,t:none,log,deny,status:%d,msg:'Multipart request body failed strict validation.'"
Include @crs-setup.conf.example
`, ruleXMLProcessor, ruleJSONProcessor, ruleJSONSuffixProcessor, ruleRequestBodyError, p.DenyStatus, ruleMultipartStrict, p.DenyStatus)
	fmt.Fprintf(&b, "SecAction \"id:%d,phase:1,pass,t:none,nolog,setvar:tx.%s=%d,setvar:tx.%s=%d,setvar:tx.%s=%d\"\n",
		ruleSetParanoia, txBlockingParanoia, p.ParanoiaLevel, txDetectionParanoia, p.ParanoiaLevel, txBodyLimit, p.RequestBodyLimit)
	b.WriteString(corroborationPhase1(p))
	fmt.Fprintf(&b, "SecAction \"id:%d,phase:1,pass,t:none,nolog,setvar:tx.%s=%d\"\n", ruleSetThreshold, txAnomalyThreshold, p.InboundAnomalyThreshold)
	fmt.Fprintf(&b, "SecAction \"id:%d,phase:1,pass,t:none,nolog,setvar:'tx.%s=%s'\"\n", ruleSetMethods, txAllowedMethods, meshAllowedMethods)
	fmt.Fprintf(&b, "SecAction \"id:%d,phase:1,pass,t:none,nolog,setvar:'tx.%s=%s'\"\n", ruleSetContentTypes, txAllowedContentTypes, meshAllowedContentTypes)
	fmt.Fprintf(&b, "SecRule REQUEST_HEADERS:Content-Type \"@rx ^application/grpc(?:-web)?(?:[+;]|$)\" \"id:%d,phase:1,pass,nolog,t:none,t:lowercase,ctl:requestBodyProcessor=%s\"\n",
		ruleGRPCProcessor, grpcbody.Name)
	b.WriteString(grpcbody.RawRule(ruleGRPCRaw))
	exBefore, exAfter := exclusionDirectives(p.Exclusions, ruleCopies(p), tokenRules(p))
	if p.BeforeCRS != "" {
		b.WriteString(p.BeforeCRS)
		b.WriteString("\n")
	}
	b.WriteString(exBefore)
	writeCRS(&b, p.RulePackOn(), corroborationRules(p))
	b.WriteString(beyondAfterCRS(p))
	b.WriteString(exAfter)
	if p.AfterCRS != "" {
		b.WriteString(p.AfterCRS)
		b.WriteString("\n")
	}
	b.WriteString(corroborationAfterCRS(p))
	return b.String()
}

// crsBlockingFile is CRS's file that sums the anomaly score and blocks:
// detection rules must be loaded before it.
const crsBlockingFile = "@owasp_crs/REQUEST-949-BLOCKING-EVALUATION.conf"

// writeCRS writes the CRS request rules: one Include of them all, or with
// the rule pack or SecLang to load before CRS's blocking evaluation
// (beforeBlocking), an Include per file and those before crsBlockingFile.
func writeCRS(b *strings.Builder, withPack bool, beforeBlocking string) {
	const all = "@owasp_crs/REQUEST-*.conf"
	if !withPack && beforeBlocking == "" {
		b.WriteString("Include " + all + "\n")
		return
	}
	files, _ := fs.Glob(coreruleset.FS, all) // sorted; the pattern is valid
	pack := false
	for _, f := range files {
		if f == crsBlockingFile {
			writePack(b, withPack, beforeBlocking)
			pack = true
		}
		b.WriteString("Include " + f + "\n")
	}
	if !pack { // not reached with the embedded CRS (TestDirectivesRulePack)
		writePack(b, withPack, beforeBlocking)
	}
}

func writePack(b *strings.Builder, withPack bool, beforeBlocking string) {
	if withPack {
		b.WriteString(rulepack.SecLang())
	}
	b.WriteString(beforeBlocking)
}
