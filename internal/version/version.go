// Package version holds meshwaf's release version, read from the VERSION
// file next to it: the one source of the version that scripts/build.sh
// stamps into the binary, the Dockerfile's VERSION default (a test keeps
// them equal) and the tag of the default image in the manifests.
package version

import (
	_ "embed"
	"strings"
)

//go:embed VERSION
var file string

// Release is the version of this source tree, e.g. "v0.1.0".
var Release = strings.TrimSpace(file)
