//go:build coraza.rule.no_regex_multiline

package rx

// rxDefaultFlags follows Coraza's coraza.rule.no_regex_multiline build tag,
// which drops the multiline flag.
const rxDefaultFlags = "(?s)"
