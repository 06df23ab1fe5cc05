package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every bad-config fixture through `config validate`: every error names
// the file, the line, the field and, where it comes from a profile, its
// name; all of a file's errors are reported at once.
func TestConfigValidate(t *testing.T) {
	dir := filepath.Join("testdata", "config")
	tests := []struct {
		file string
		want []string // one line each, in order
	}{
		{"valid-profiles.yaml", nil},
		{"unknown-key.yaml", []string{
			"unknown-key.yaml:2: grpcAdress: unknown key",
			"unknown-key.yaml:5: defaultProfile.paranoia: unknown key",
			"unknown-key.yaml:8: profiles[0].paranoiaLvl: unknown key",
		}},
		{"bad-paranoia-level.yaml", []string{
			"bad-paranoia-level.yaml:4: defaultProfile.paranoiaLevel: 7 is not between 1 and 4",
			"bad-paranoia-level.yaml:8: profiles[1].paranoiaLevel: 5 is not between 1 and 4",
		}},
		{"bad-rules.yaml", []string{
			`bad-rules.yaml:1: defaultProfile: profile "default": compiling rules:`,
			`bad-rules.yaml:5: profiles[0]: profile "cms": compiling rules:`,
		}},
		{"exclusion-unknown-rule.yaml", []string{`exclusion-unknown-rule.yaml:4: profiles[0].exclusions[0].ruleIds: profile "cms": rule 999999 does not exist`}},
		{"duplicate-profile.yaml", []string{`duplicate-profile.yaml:4: profiles[2].name: "payments" is already the name of profiles[0]`}},
		{"duplicate-match.yaml", []string{`duplicate-match.yaml:5: profiles[1].match.namespaces: profile "b": "shop" is already matched by profile "a"`}},
		{"hosts-without-identity.yaml", []string{`hosts-without-identity.yaml:5: profiles[0].match.hosts: profile "cms": needs match.namespaces or match.serviceAccounts`}},
		// Unknown keys do not hide invalid values: every error, in file order.
		{"every-error.yaml", []string{
			"every-error.yaml:1: grpcAdress: unknown key",
			`every-error.yaml:2: grpcAddress: "nonsense" is not HOST:PORT`,
			`every-error.yaml:3: logLevel: "loud" is not one of debug, info, warn, error`,
			"every-error.yaml:5: defaultProfile.paranoia: unknown key",
			`every-error.yaml:6: defaultProfile.mode: "blocking" is neither "block" nor "detect"`,
			"every-error.yaml:7: drainDelay: -5s is negative",
			"every-error.yaml:8: maxMessageBytes: 10 is below 1114112",
			"every-error.yaml:11: profiles[0].paranoiaLvl: unknown key",
			"every-error.yaml:12: profiles[0].paranoiaLevel: 9 is not between 1 and 4",
			"every-error.yaml:13: profiles[0].inboundAnomalyThreshold: -1 is not positive",
			"every-error.yaml:14: profiles[1].name: every profile needs a name",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			code, stdout, stderr := runCLI(t, "", "config", "validate", path)
			if tt.want == nil {
				require.Equal(t, exitOK, code, stderr)
				require.Equal(t, path+": valid\n", stdout)
				return
			}
			require.Equal(t, exitError, code)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			require.Len(t, lines, len(tt.want)+1, stderr)
			for i, w := range tt.want {
				require.True(t, strings.HasPrefix(lines[i], filepath.Join(dir, w)), "line %d: %q does not start with %q", i, lines[i], w)
			}
			require.Equal(t, "meshwaf config: configuration is not valid", lines[len(lines)-1])
		})
	}
}

// The whole message a user reads for a bad profile match: the field path
// once (not again inside the message) and the value as written, not
// lower-cased.
func TestConfigValidateMessages(t *testing.T) {
	tests := []struct {
		file, path, written string
		want                string
	}{
		{"bad-match-host.yaml", "profiles[0].match.hosts", `"Bad_Host"`,
			`bad-match-host.yaml:5: profiles[0].match.hosts: profile "cms": "Bad_Host" is not a host name or *.suffix`},
		{"duplicate-host.yaml", "profiles[1].match.hosts", `"Shop.Example.com"`,
			`duplicate-host.yaml:5: profiles[1].match.hosts: profile "b": "Shop.Example.com" of "shop" is already matched by profile "a"`},
		{"duplicate-match.yaml", "profiles[1].match.namespaces", `"shop"`,
			`duplicate-match.yaml:5: profiles[1].match.namespaces: profile "b": "shop" is already matched by profile "a"`},
		{"exclusion-unknown-rule.yaml", "profiles[0].exclusions[0].ruleIds", "999999",
			`exclusion-unknown-rule.yaml:4: profiles[0].exclusions[0].ruleIds: profile "cms": rule 999999 does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "config", tt.file)
			code, _, stderr := runCLI(t, "", "config", "validate", path)
			require.Equal(t, exitError, code)
			msg, _, _ := strings.Cut(stderr, "\n")
			require.Equal(t, filepath.Join("testdata", "config", tt.want), msg)
			field := tt.path[strings.LastIndexByte(tt.path, '.')+1:]
			require.Equal(t, 1, strings.Count(msg, field), "the field is named once: %s", msg)
			require.Contains(t, msg, tt.written)
		})
	}
}

func TestConfigValidateUsage(t *testing.T) {
	for _, args := range [][]string{{"config"}, {"config", "check", "x"}, {"config", "validate"}} {
		code, _, stderr := runCLI(t, "", args...)
		require.Equal(t, exitUsage, code, args)
		require.Contains(t, stderr, "usage: meshwaf config validate FILE")
	}
	code, _, stderr := runCLI(t, "", "config", "validate", "testdata/config/nosuch.yaml")
	require.Equal(t, exitError, code)
	require.Contains(t, stderr, "no such file")
}

func TestInspectWithProfile(t *testing.T) {
	cfg := filepath.Join("testdata", "config", "valid-profiles.yaml")
	seed := "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"
	code, stdout, stderr := runCLI(t, "", "inspect", "-config", cfg, "-profile", "cms", "-url", seed)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stdout, "profile:  cms (paranoia level 1, threshold 5, detect)")
	require.Contains(t, stdout, "decision: detect")

	code, _, stderr = runCLI(t, "", "inspect", "-config", cfg, "-profile", "nosuch", "-url", "/")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `-profile "nosuch": no such profile (have cms, default, payments)`)
}
