//go:build !coraza.rule.no_regex_multiline

package rx

// rxDefaultFlags are the flags Coraza puts in front of every @rx pattern:
// dot matches newline and ^ $ match at line breaks (ModSecurity's habit).
const rxDefaultFlags = "(?sm)"
