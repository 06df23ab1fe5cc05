package cluster

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Severity is how much a finding matters. Only SeverityError means that
// inspection is blocked (or was never set up) for what the finding names.
type Severity string

// The severities, from the worst.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

// rank orders severities, the worst first.
func (s Severity) rank() int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// AtLeast reports whether s is as bad as min or worse.
func (s Severity) AtLeast(min Severity) bool { return s.rank() <= min.rank() }

// Code is a finding's stable identifier (MW0001 ...). A code keeps its
// meaning and severity across releases; retired codes are not reused.
type Code string

// The codes of doctor's findings. The README's "Troubleshoot with meshwaf
// doctor" lists them; TestCodesDocumented keeps the two in step.
const (
	CodeMeshConfigMissing       Code = "MW0001"
	CodeProviderMissing         Code = "MW0002"
	CodeProviderNotGRPC         Code = "MW0003"
	CodeProviderService         Code = "MW0004"
	CodeProviderPort            Code = "MW0005"
	CodeProviderTimeout         Code = "MW0006"
	CodeProviderFailOpen        Code = "MW0007"
	CodeProviderNoBody          Code = "MW0008"
	CodeProviderBodyOverLimit   Code = "MW0009"
	CodeProviderPartialDenied   Code = "MW0010"
	CodeProviderPartialPasses   Code = "MW0011"
	CodeMeshwafConfigUnreadable Code = "MW0012"

	CodeDeploymentMissing     Code = "MW0020"
	CodeDeploymentUnavailable Code = "MW0021"
	CodeDeploymentDegraded    Code = "MW0022"
	CodeHealthNotServing      Code = "MW0023"
	CodeHealthUnreachable     Code = "MW0024"
	CodeHealthSkipped         Code = "MW0025"
	CodeHealthServing         Code = "MW0026"

	CodeWorkloadInspected       Code = "MW0030"
	CodeWorkloadUncovered       Code = "MW0031"
	CodeWorkloadOtherCustom     Code = "MW0032"
	CodeWorkloadInspectedTwice  Code = "MW0033"
	CodeWorkloadOtherCustomOK   Code = "MW0034"
	CodeNoWorkloadOptedIn       Code = "MW0035"
	CodeWaypointTargetIdle      Code = "MW0036"
	CodeEnvoyFilterOnWaypoint   Code = "MW0040"
	CodePolicyAwaitingPromotion Code = "MW0050"
)

// CodeInfo is the catalogue entry of a code.
type CodeInfo struct {
	Code     Code
	Severity Severity
	// Title names the condition in a few words.
	Title string
}

// Codes is the catalogue of every code, in code order.
func Codes() []CodeInfo {
	return []CodeInfo{
		{CodeMeshConfigMissing, SeverityError, "Istio's mesh config cannot be read"},
		{CodeProviderMissing, SeverityError, "meshwaf's extension provider is not in the mesh config"},
		{CodeProviderNotGRPC, SeverityError, "meshwaf's extension provider is not envoyExtAuthzGrpc"},
		{CodeProviderService, SeverityError, "the provider's service is not meshwaf's Service"},
		{CodeProviderPort, SeverityError, "the provider's port is not meshwaf's gRPC port"},
		{CodeProviderTimeout, SeverityWarning, "the provider's timeout is unset or out of range"},
		{CodeProviderFailOpen, SeverityWarning, "the provider fails open"},
		{CodeProviderNoBody, SeverityWarning, "the provider sends no request bodies"},
		{CodeProviderBodyOverLimit, SeverityWarning, "maxRequestBytes exceeds meshwaf's requestBodyLimit"},
		{CodeProviderPartialDenied, SeverityInfo, "bodies over maxRequestBytes are cut and then denied"},
		{CodeProviderPartialPasses, SeverityWarning, "bodies over maxRequestBytes pass partly uninspected"},
		{CodeMeshwafConfigUnreadable, SeverityWarning, "meshwaf's ConfigMap cannot be read"},
		{CodeDeploymentMissing, SeverityError, "meshwaf's Deployment does not exist"},
		{CodeDeploymentUnavailable, SeverityError, "meshwaf's Deployment has no available replica"},
		{CodeDeploymentDegraded, SeverityWarning, "meshwaf's Deployment has fewer available replicas than desired"},
		{CodeHealthNotServing, SeverityError, "meshwaf's gRPC health is not SERVING"},
		{CodeHealthUnreachable, SeverityInfo, "meshwaf's gRPC health cannot be reached from here"},
		{CodeHealthSkipped, SeverityInfo, "meshwaf's gRPC health was not probed"},
		{CodeHealthServing, SeverityInfo, "meshwaf's gRPC health is SERVING"},
		{CodeWorkloadInspected, SeverityInfo, "workload under inspection"},
		{CodeWorkloadUncovered, SeverityError, "opted-in workload under no inspection"},
		{CodeWorkloadOtherCustom, SeverityError, "workload held by another CUSTOM provider"},
		{CodeWorkloadInspectedTwice, SeverityWarning, "workload inspected twice (CUSTOM and EnvoyFilter)"},
		{CodeWorkloadOtherCustomOK, SeverityInfo, "workload has two CUSTOM providers, allowed by istiod"},
		{CodeNoWorkloadOptedIn, SeverityInfo, "no workload carries the opt-in label"},
		{CodeWaypointTargetIdle, SeverityError, "waypoint policy target that no waypoint serves"},
		{CodeEnvoyFilterOnWaypoint, SeverityWarning, "EnvoyFilter on a waypoint (unsupported)"},
		{CodePolicyAwaitingPromotion, SeverityInfo, "generated policy in dry-run, waiting for promotion"},
	}
}

// severityOf is the catalogue severity of c.
func severityOf(c Code) Severity {
	for _, ci := range Codes() {
		if ci.Code == c {
			return ci.Severity
		}
	}
	panic(fmt.Sprintf("cluster: code %s is not in the catalogue", c)) // a programming error
}

// Object names what a finding concerns.
type Object struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (o Object) String() string {
	if o.Namespace == "" {
		return o.Kind + " " + o.Name
	}
	return o.Kind + " " + o.Namespace + "/" + o.Name
}

// Finding is one result of Diagnose.
type Finding struct {
	Code     Code     `json:"code"`
	Severity Severity `json:"severity"`
	Object   Object   `json:"object"`
	Message  string   `json:"message"`
	// Fix says what to do; empty for findings that need nothing done.
	Fix string `json:"fix,omitempty"`
}

// newFinding is a finding with its code's catalogue severity.
func newFinding(c Code, o Object, fix string, format string, args ...any) Finding {
	return Finding{Code: c, Severity: severityOf(c), Object: o, Message: fmt.Sprintf(format, args...), Fix: fix}
}

// Sort orders findings by severity (worst first), then code, then object.
func Sort(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(a.Severity.rank(), b.Severity.rank()),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Object.Kind, b.Object.Kind),
			cmp.Compare(a.Object.Namespace, b.Object.Namespace),
			cmp.Compare(a.Object.Name, b.Object.Name),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// Worst reports whether any finding is at least min.
func Worst(fs []Finding, min Severity) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity.AtLeast(min) })
}

// WriteText writes findings one block each, as
//
//	error   MW0031 Deployment shop/cart: message
//	        fix: ...
//
// followed by a count per severity.
func WriteText(w io.Writer, fs []Finding) error {
	var b strings.Builder
	counts := map[Severity]int{}
	for _, f := range fs {
		counts[f.Severity]++
		fmt.Fprintf(&b, "%-7s %s %s: %s\n", f.Severity, f.Code, f.Object, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(&b, "        fix: %s\n", f.Fix)
		}
	}
	fmt.Fprintf(&b, "%d error(s), %d warning(s), %d info\n", counts[SeverityError], counts[SeverityWarning], counts[SeverityInfo])
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes findings as a JSON array (never null).
func WriteJSON(w io.Writer, fs []Finding) error {
	if fs == nil {
		fs = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(fs)
}
