package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/meshwaf/meshwaf/internal/tune"
)

// tuneCommand reads audit lines and writes the exclusions that would
// silence their findings (internal/tune).
func tuneCommand(_ context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("tune")
	file := fs.String("f", "-", "read audit lines from `FILE` ('-' for stdin)")
	minCount := fs.Int("min-count", 1, "propose only exclusions seen in at least `N` checks")
	profile := fs.String("profile", "", "read only the audit lines of profile `NAME`")
	if err := parseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	if *minCount < 1 {
		return usageError{fmt.Errorf("--min-count %d: want at least 1", *minCount)}
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return usageError{err}
		}
		defer f.Close()
		in = f
	}
	rep, err := tune.Propose(in, tune.Options{MinCount: *minCount, Profile: *profile})
	if err != nil {
		return err
	}
	return tune.Write(stdout, rep)
}
