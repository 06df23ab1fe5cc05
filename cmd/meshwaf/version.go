package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/meshwaf/meshwaf/inspector"
	mwversion "github.com/meshwaf/meshwaf/internal/version"
)

// buildVersion is set at link time: scripts/build.sh passes
// -ldflags "-X main.buildVersion=$(cat internal/version/VERSION)".
var buildVersion = ""

// version is the stamped version, else the module's, else this tree's
// release with "-dev" (a go build or go run without the stamp).

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return mwversion.Release + "-dev"
}

func versionCommand(args []string, w io.Writer) error {
	fs := newFlagSet("version")
	if err := parseArgs(fs, args, w); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	coraza := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/corazawaf/coraza/v3" {
				coraza = d.Version
			}
		}
	}
	_, err := fmt.Fprintf(w, "meshwaf %s\ncoraza %s\ncrs %s\ngo %s %s/%s\n",
		version(), coraza, inspector.CRSVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
