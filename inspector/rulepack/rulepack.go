// Package rulepack holds meshwaf's rule pack: SecLang rules for attack
// classes the OWASP Core Rule Set covers weakly at paranoia level 1 (LDAP
// filter injection, CR/LF header and mail-command injection, server-side
// template injection, NoSQL operator injection, XPath injection, command
// injection). The inspector loads them
// after CRS's detection rules and before CRS's blocking evaluation, so they
// add to CRS's inbound anomaly score like CRS's own rules.
//
// tests/ holds positive and negative tests per rule in go-ftw's YAML format;
// the e2e package runs them through Envoy and the meshwaf binary.
package rulepack

import _ "embed" // the rules are embedded

// Rule ids: the pack uses FirstID..LastID only (ModSecurity's id
// reservation list leaves 440000-599999 unassigned; CRS uses 900000-999999,
// meshwaf's own rules 99xxx and 2000xx).
const (
	FirstID = 460000
	LastID  = 460999
)

// Tag is on every rule of the pack: SecRuleRemoveByTag meshwaf, or a
// profile exclusion with tags: [meshwaf], removes the whole pack.
const Tag = "meshwaf"

//go:embed rules.conf
var rules string

// SecLang returns the pack's rules. They need CRS's setup and
// REQUEST-901-INITIALIZATION (the anomaly score variables) loaded before
// them and REQUEST-949-BLOCKING-EVALUATION after them.
func SecLang() string { return rules }
