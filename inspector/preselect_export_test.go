package inspector

import "github.com/meshwaf/meshwaf/inspector/internal/preselect"

// PreselectSupported reports whether a transaction of the named profile's
// WAF offers what rule pre-selection asserts on it (preselect.Supported).
func PreselectSupported(rs *RuleSet, profile string) bool {
	c := rs.def
	if p, ok := rs.profiles[profile]; ok {
		c = p
	}
	tx := c.waf.NewTransaction()
	defer func() { _ = tx.Close() }()
	return preselect.Supported(tx)
}

// PreselectKept returns why pre-selection never removes each rule it keeps
// in the named profile (nil when pre-selection is off there).
func PreselectKept(rs *RuleSet, profile string) map[int]string {
	c := rs.def
	if p, ok := rs.profiles[profile]; ok {
		c = p
	}
	if c.plan == nil {
		return nil
	}
	return c.plan.Kept()
}
