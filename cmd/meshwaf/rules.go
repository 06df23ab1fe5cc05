package main

import (
	"errors"
	"fmt"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// compiled is what serve runs with: every profile compiled and the
// selection between them.
type compiled struct {
	rules    *inspector.RuleSet
	selector *extauthz.Selector
}

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
	// at is where a profile lives in the file.
	at := func(name string) fielderr.Path {
		if i, ok := index[name]; ok {
			return fielderr.At("profiles").Index(i)
		}
		return fielderr.At("defaultProfile")
	}
	var errs []error
	// locate places each error of a profile at the profile's path followed
	// by the error's own; the message names the profile.
	locate := func(err error) {
		for _, e := range fielderr.Split(err) {
			var pe *inspector.ProfileError
			if !errors.As(e, &pe) {
				errs = append(errs, e)
				continue
			}
			for _, e := range fielderr.Split(fielderr.Prefix(at(pe.Profile), pe.Err)) {
				var fe *fielderr.Error
				errors.As(e, &fe) // Prefix makes every part one
				errs = append(errs, cfg.locate(fe.Path, fmt.Errorf("profile %q: %w", pe.Profile, fe.Err)))
			}
		}
	}
	rs, err := inspector.Compile(cfg.DefaultProfile, extra...)
	locate(err)
	known := []string{inspector.DefaultProfileName}
	for _, p := range cfg.Profiles {
		known = append(known, p.Name)
	}
	sel, err := extauthz.NewSelector("", known, matches)
	locate(err)
	if len(errs) > 0 {
		return compiled{}, errors.Join(errs...)
	}
	return compiled{rules: rs, selector: sel}, nil
}
