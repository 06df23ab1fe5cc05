package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// errInvalidConfig is returned by `config validate` after it printed the
// errors (exit code 1).
var errInvalidConfig = errors.New("configuration is not valid")

// configCommand is `meshwaf config validate FILE...`: the same strict load
// and rule compilation as serve, reporting every error (file, line, field,
// profile) at once.
func configCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		return writeGroupHelp(stdout, "config", commandGroups["config"])
	}
	if len(args) == 0 || args[0] != "validate" {
		return usageError{errors.New("usage: meshwaf config validate FILE [FILE...]")}
	}
	fs := newFlagSet("config validate")
	if err := parseArgs(fs, args[1:], stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{errors.New("usage: meshwaf config validate FILE [FILE...]")}
	}
	bad := 0
	for _, path := range fs.Args() {
		errs := validateFile(path)
		if len(errs) == 0 {
			fmt.Fprintf(stdout, "%s: valid\n", path)
			continue
		}
		bad++
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
	}
	if bad > 0 {
		return errInvalidConfig
	}
	return nil
}

// validateFile loads and compiles one config file and returns its errors,
// one per problem.
func validateFile(path string) []string {
	cfg := defaultConfig()
	var msgs []string
	add := func(err error) {
		for _, e := range fielderr.Split(err) {
			msgs = append(msgs, strings.TrimSpace(e.Error()))
		}
	}
	if err := loadConfigFile(path, &cfg); err != nil {
		add(err)
		return msgs
	}
	if _, err := compileConfig(cfg); err != nil {
		add(err)
	}
	return msgs
}
