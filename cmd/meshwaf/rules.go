package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

// compiled is what serve runs with: every profile compiled and the
// selection between them.
type compiled struct {
	rules    *inspector.RuleSet
	selector *extauthz.Selector
}

// reField matches an error that starts with a field path, e.g.
// "exclusions[0].ruleIds: rule 1 does not exist".
var reField = regexp.MustCompile(`^([A-Za-z]+(?:\[\d+\])?(?:\.[A-Za-z]+(?:\[\d+\])?)*): (.*)$`)

// compileConfig compiles every profile of cfg and builds the selector. All
// errors are returned, each located in the config file when there is one.
func compileConfig(cfg Config) (compiled, error) {
	extra := make([]inspector.Profile, len(cfg.Profiles))
	index := map[string]int{}
	matches := make([]extauthz.ProfileMatch, 0, len(cfg.Profiles))
	for i, p := range cfg.Profiles {
		extra[i] = p.Profile
		index[p.Name] = i
		matches = append(matches, extauthz.ProfileMatch{Profile: p.Name, Match: p.Match})
	}
	// prefix is where a profile lives in the file.
	prefix := func(name string) string {
		if i, ok := index[name]; ok {
			return fmt.Sprintf("profiles[%d]", i)
		}
		return "defaultProfile"
	}
	var errs []error
	rs, err := inspector.Compile(cfg.DefaultProfile, extra...)
	if err != nil {
		for _, e := range unjoin(err) {
			var pe *inspector.ProfileError
			if !errors.As(e, &pe) {
				errs = append(errs, e)
				continue
			}
			for _, inner := range unjoin(pe.Err) {
				field := prefix(pe.Profile)
				msg := inner.Error()
				if m := reField.FindStringSubmatch(msg); m != nil {
					field, msg = field+"."+m[1], m[2]
				}
				errs = append(errs, cfg.locate(field, fmt.Errorf("profile %q: %s", pe.Profile, msg)))
			}
		}
	}
	known := []string{inspector.DefaultProfileName}
	for _, p := range cfg.Profiles {
		known = append(known, p.Name)
	}
	sel, err := extauthz.NewSelector("", known, matches)
	if err != nil {
		for _, e := range unjoin(err) {
			field := "profiles"
			msg := e.Error()
			// "profile "x": match.hosts: ..." names the profile and field.
			if rest, ok := strings.CutPrefix(msg, "profile \""); ok {
				if name, tail, ok := strings.Cut(rest, "\": "); ok {
					field = prefix(name)
					if m := reField.FindStringSubmatch(tail); m != nil {
						field += "." + m[1]
					}
				}
			}
			errs = append(errs, cfg.locate(field, e))
		}
	}
	if len(errs) > 0 {
		return compiled{}, errors.Join(errs...)
	}
	return compiled{rules: rs, selector: sel}, nil
}
