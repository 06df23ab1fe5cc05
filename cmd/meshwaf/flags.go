package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
)

// commonFlags are the settings shared by serve and inspect.
type commonFlags struct {
	config        string
	paranoiaLevel int
	mode          string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "YAML config file (env MESHWAF_CONFIG)")
	fs.IntVar(&c.paranoiaLevel, "paranoia-level", 0, "CRS paranoia level 1-4 of the default profile (default 1; env MESHWAF_PARANOIA_LEVEL)")
	fs.StringVar(&c.mode, "mode", "", "block or detect for the default profile (default block; env MESHWAF_MODE)")
}

// listFlag is a repeatable string flag: each use adds its value as given.
// Given at all, it replaces the initial values (the default shown in help).
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }

func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	l.vals = append(l.vals, v)
	return nil
}

// nonEmpty returns the values without the empty ones, for flags where an
// empty value clears the list: the initial values when the flag was not
// given, else those given that are not empty (nil for none).
func (l *listFlag) nonEmpty() []string {
	if !l.set {
		return l.vals
	}
	var out []string
	for _, v := range l.vals {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// envName is the environment variable that sets a flag.
func envName(flagName string) string {
	return "MESHWAF_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from its MESHWAF_* variable. It returns the names of the flags that
// were set either way; only those override the config file.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (map[string]bool, error) {
	if err := parseArgs(fs, args, stdout); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)}
				return
			}
			set[f.Name] = true
		}
	})
	return set, err
}

// loadConfig builds the Config: defaults, then the file, then flags/env.
func loadConfig(c *commonFlags, set map[string]bool) (Config, error) {
	data, err := readConfig(c, os.ReadFile)
	if err != nil {
		return Config{}, err
	}
	return configFrom(c, set, data)
}

// readConfig returns the content of the config file, or nil when there is
// none.
func readConfig(c *commonFlags, read func(string) ([]byte, error)) ([]byte, error) {
	if c.config == "" {
		return nil, nil
	}
	data, err := read(c.config)
	if err != nil {
		return nil, usageError{err}
	}
	return data, nil
}

// configFrom builds the Config: defaults, then data (the content of the
// config file, when there is one), then flags/env.
func configFrom(c *commonFlags, set map[string]bool, data []byte) (Config, error) {
	cfg := defaultConfig()
	if c.config != "" {
		if err := decodeConfig(c.config, data, &cfg); err != nil {
			return Config{}, usageError{err}
		}
	}
	if set["paranoia-level"] {
		cfg.DefaultProfile.ParanoiaLevel = c.paranoiaLevel
	}
	if set["mode"] {
		cfg.DefaultProfile.Mode = inspector.Mode(c.mode)
	}
	if err := cfg.DefaultProfile.WithDefaults().Validate(); err != nil {
		return Config{}, usageError{fmt.Errorf("default profile: %w", err)}
	}
	return cfg, nil
}
