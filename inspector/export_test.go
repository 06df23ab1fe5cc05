package inspector

// Test hooks for the differential test (package inspector_test), which
// compares meshwaf's engine with Coraza's own operators.

// RaceEnabled reports whether the race detector is on.
const RaceEnabled = raceEnabled

// DiffCase is one row of the inspector's case table.
type DiffCase struct {
	Name    string
	Profile string
	Request Request
}

// DiffCases returns the case table's requests and the extra profiles it
// names (TestProfiles).
func DiffCases() []DiffCase {
	var out []DiffCase
	for _, c := range cases() {
		out = append(out, DiffCase{Name: c.name, Profile: c.profile, Request: c.req})
	}
	return out
}

// CaseProfiles returns the extra profiles of the shared test rule set.
func CaseProfiles() []Profile { return testProfiles() }
