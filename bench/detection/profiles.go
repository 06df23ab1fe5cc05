package main

import (
	"fmt"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
)

// Profile names.
const (
	ProfileDefault = "default"
	ProfileCRSPL1  = "crs-pl1"
	ProfileCRSPL2  = "crs-pl2"
)

// defaultProfile is meshwaf's default profile as a user gets it: the zero
// Profile, so whatever meshwaf adds by default is measured.
func defaultProfile() inspector.Profile {
	return inspector.Profile{Name: ProfileDefault}
}

// crsProfile is plain CRS at level pl on meshwaf's engine: every meshwaf
// addition that changes what is detected (decoded views, headers as data,
// XML attributes, file names, the DOCTYPE denial, the rule pack) is off,
// by inspector.Profile.CRSOnly.
func crsProfile(pl int) inspector.Profile {
	return inspector.Profile{Name: fmt.Sprintf("crs-pl%d", pl), ParanoiaLevel: pl}.CRSOnly()
}

// profilesNamed returns the profiles named in the comma-separated list.
func profilesNamed(list string) ([]inspector.Profile, error) {
	var out []inspector.Profile
	for _, n := range strings.Split(list, ",") {
		switch n = strings.TrimSpace(n); {
		case n == ProfileDefault:
			out = append(out, defaultProfile())
		case strings.HasPrefix(n, "crs-pl") && len(n) == len("crs-pl")+1 && n[6] >= '1' && n[6] <= '4':
			out = append(out, crsProfile(int(n[6]-'0')))
		default:
			return nil, fmt.Errorf("unknown profile %q (default, crs-pl1 ... crs-pl4)", n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no profile")
	}
	return out, nil
}
