package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

func TestLoadConfigFile(t *testing.T) {
	cfg := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", "valid.yaml"), &cfg))
	require.Equal(t, "127.0.0.1:9000", cfg.GRPCAddress)
	require.Equal(t, 8388608, cfg.maxMessageBytes())
	require.Equal(t, Duration(5*time.Second), cfg.DrainDelay)
	require.Equal(t, Duration(20*time.Second), cfg.ShutdownTimeout)
	require.True(t, cfg.AuditRawValues)
	p := cfg.DefaultProfile
	require.Equal(t, 2, p.ParanoiaLevel)
	require.Equal(t, 7, p.InboundAnomalyThreshold)
	require.Equal(t, inspector.ModeDetect, p.Mode)
	require.Equal(t, 2097152, p.RequestBodyLimit)
	require.Contains(t, p.BeforeCRS, "tx.allowed_methods")
	require.Contains(t, p.AfterCRS, "SecRuleRemoveById 920350")
	_, err := inspector.Compile(p)
	require.NoError(t, err, "the documented example compiles")

	empty := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", "empty.yaml"), &empty))
	require.Equal(t, defaultGRPCAddress, empty.GRPCAddress)
	require.Equal(t, 4<<20, empty.maxMessageBytes())
}

// One fixture per way a config file can be wrong; each error names the
// file, the line and the field.
func TestLoadConfigFileErrors(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown-key.yaml", "unknown-key.yaml:2: grpcAdress: unknown key"},
		{"unknown-key.yaml", "unknown-key.yaml:5: defaultProfile.paranoia: unknown key"},
		{"bad-paranoia-level.yaml", "bad-paranoia-level.yaml:4: defaultProfile.paranoiaLevel: 7 is not between 1 and 4"},
		{"bad-mode.yaml", `bad-mode.yaml:2: defaultProfile.mode: "blocking" is neither "block" nor "detect"`},
		{"wrong-type.yaml", "wrong-type.yaml:2: defaultProfile.inboundAnomalyThreshold: cannot unmarshal !!str `high` into int"},
		{"bad-duration.yaml", `bad-duration.yaml:1: shutdownTimeout: "soon" is not a duration like 15s`},
		{"bad-yaml.yaml", "bad-yaml.yaml:2"},
		{"bad-status.yaml", "bad-status.yaml:1: failureStatus: 200 is not an HTTP 4xx or 5xx status"},
		{"bad-max-in-flight.yaml", "bad-max-in-flight.yaml:1: maxInFlight: must not be negative"},
		{"bad-max-body-bytes-in-flight.yaml", "bad-max-body-bytes-in-flight.yaml:2: maxBodyBytesInFlight: must not be negative"},
		{"bad-queue-wait.yaml", "bad-queue-wait.yaml:1: queueWait: must not be negative"},
		{"bad-max-streams.yaml", "bad-max-streams.yaml:2: maxStreams: 2 is below maxInFlight (4)"},
		{"missing.yaml", "no such file"},
		{"negative-drain-delay.yaml", "negative-drain-delay.yaml:2: drainDelay: -5s is negative"},
		{"negative-shutdown-timeout.yaml", "negative-shutdown-timeout.yaml:1: shutdownTimeout: -1s is negative"},
		{"bad-grpc-address.yaml", `bad-grpc-address.yaml:2: grpcAddress: "nonsense" is not HOST:PORT`},
		{"bad-grpc-host.yaml", `bad-grpc-host.yaml:1: grpcAddress: host "bad host" is not an IP address or DNS name`},
		{"bad-admin-port.yaml", "bad-admin-port.yaml:1: adminAddress: port 99999 is not between 0 and 65535"},
		{"named-admin-port.yaml", `named-admin-port.yaml:1: adminAddress: port "http" is not a number`},
		{"small-max-message.yaml", "small-max-message.yaml:2: maxMessageBytes: 10 is below 1114112, " +
			"the largest requestBodyLimit (1048576, defaultProfile) plus 64 KiB for headers and framing"},
		{"small-max-message-profile.yaml", "small-max-message-profile.yaml:2: maxMessageBytes: 4194304 is below 8454144, " +
			`the largest requestBodyLimit (8388608, profiles[0] "uploads") plus 64 KiB for headers and framing`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg := defaultConfig()
			before := cfg
			err := loadConfigFile(filepath.Join("testdata", "config", tt.file), &cfg)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			require.Equal(t, before, cfg, "a failed load changes nothing")
		})
	}
}

// The gRPC receive limit admits a check carrying a body at the largest
// requestBodyLimit of any profile, not only the default profile's.
func TestMaxMessageBytes(t *testing.T) {
	tests := []struct {
		file string
		want int
	}{
		{"empty.yaml", 4 << 20},
		{"valid.yaml", 8 << 20}, // explicit
		{"large-profile-limit.yaml", 2*(8<<20) + 1<<20},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg := defaultConfig()
			require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", tt.file), &cfg))
			require.Equal(t, tt.want, cfg.maxMessageBytes())
			need, _ := cfg.messageNeed()
			require.GreaterOrEqual(t, cfg.maxMessageBytes(), need)
		})
	}
}

func TestCompileErrorIsLocated(t *testing.T) {
	cfg := defaultConfig()
	path := filepath.Join("testdata", "config", "bad-rules.yaml")
	require.NoError(t, loadConfigFile(path, &cfg), "the SecLang is only compiled later")
	_, err := inspector.Compile(cfg.DefaultProfile)
	require.Error(t, err)
	located := cfg.locate(fielderr.At("defaultProfile"), err)
	require.Contains(t, located.Error(), path+":1: defaultProfile: profile \"default\": compiling rules:")
	require.Contains(t, located.Error(), "missing closing )")
}

func TestLineOf(t *testing.T) {
	cfg := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", "valid.yaml"), &cfg))
	require.Equal(t, 11, lineOf(cfg.root, fielderr.At("defaultProfile")))
	require.Equal(t, 12, lineOf(cfg.root, fielderr.At("defaultProfile", "paranoiaLevel")))
	require.Equal(t, 11, lineOf(cfg.root, fielderr.At("defaultProfile", "nothing")), "falls back to the nearest ancestor")
	require.Equal(t, 0, lineOf(cfg.root, fielderr.At("nothing")))
}

func TestExampleConfig(t *testing.T) {
	cfg := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("..", "..", "examples", "meshwaf.yaml"), &cfg))
	require.Equal(t, defaultGRPCAddress, cfg.GRPCAddress)
	require.Equal(t, inspector.Profile{}.WithDefaults().RequestBodyLimit, cfg.DefaultProfile.RequestBodyLimit)
	_, err := inspector.Compile(cfg.DefaultProfile)
	require.NoError(t, err)
}

// TestConfigLimits: admission limits left at 0 are derived from the
// resources; set ones win; queueWait defaults to extauthz.DefaultQueueWait
// and 0s means no wait.
func TestConfigLimits(t *testing.T) {
	res := extauthz.Resources{CPUs: 2, MemoryLimit: 512 << 20}
	empty := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", "empty.yaml"), &empty))
	require.Equal(t, extauthz.DefaultLimits(res), empty.limits(res))
	require.Equal(t, extauthz.Limits{MaxInFlight: 8, MaxBodyBytes: 1 << 20, QueueWait: 100 * time.Millisecond, MaxStreams: 64}, empty.limits(res))

	cfg := defaultConfig()
	require.NoError(t, loadConfigFile(filepath.Join("testdata", "config", "admission.yaml"), &cfg))
	require.Equal(t, extauthz.Limits{MaxInFlight: 3, MaxBodyBytes: 65536, QueueWait: 0, MaxStreams: 5}, cfg.limits(res))
}
