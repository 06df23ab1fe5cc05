package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

// configMapDir lays files out as the kubelet mounts a ConfigMap: the file
// is a symlink through ..data, and an update swaps ..data atomically.
type configMapDir struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMapDir(t *testing.T, content string) *configMapDir {
	t.Helper()
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.update(content)
	require.NoError(t, os.Symlink(filepath.Join("..data", "meshwaf.yaml"), c.path()))
	return c
}

func (c *configMapDir) path() string { return filepath.Join(c.dir, "meshwaf.yaml") }

func (c *configMapDir) update(content string) {
	c.t.Helper()
	c.gen++
	gen := fmt.Sprintf("..gen_%d", c.gen)
	require.NoError(c.t, os.Mkdir(filepath.Join(c.dir, gen), 0o755))
	require.NoError(c.t, os.WriteFile(filepath.Join(c.dir, gen, "meshwaf.yaml"), []byte(content), 0o600))
	tmp := filepath.Join(c.dir, "..data_tmp")
	require.NoError(c.t, os.Symlink(gen, tmp))
	require.NoError(c.t, os.Rename(tmp, filepath.Join(c.dir, "..data")))
}

// applied records what the reloader swapped in and, when counted is set,
// the success count at each swap.
type applied struct {
	mu        sync.Mutex
	insp      extauthz.Inspector
	count     int
	counted   func() float64
	countedAt []float64
}

func (a *applied) apply(i extauthz.Inspector, _ *extauthz.Selector) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.insp, a.count = i, a.count+1
	if a.counted != nil {
		a.countedAt = append(a.countedAt, a.counted())
	}
}

func (a *applied) get() (extauthz.Inspector, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.insp, a.count
}

const (
	configBlock  = "defaultProfile: {mode: block}\n"
	configDetect = "defaultProfile: {mode: detect}\n"
	configBroken = "testdata/config/bad-rules.yaml" // SecLang that does not compile
)

// fileSource reads path from disk and decodes it over the defaults, as
// serve does without flags.
func fileSource(path string) configSource {
	return configSource{read: os.ReadFile, load: func(data []byte) (Config, error) {
		c := defaultConfig()
		err := decodeConfig(path, data, &c)
		return c, err
	}}
}

// loadTestConfig loads path as serve does at start: the Config and the
// bytes it came from.
func loadTestConfig(t *testing.T, path string) (Config, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	cfg, err := fileSource(path).load(data)
	require.NoError(t, err)
	return cfg, data
}

func seedDecision(t *testing.T, insp extauthz.Inspector) inspector.Decision {
	t.Helper()
	v, err := insp.Inspect(context.Background(), inspector.Request{
		Method: "GET", Protocol: "HTTP/1.1", Host: "auth:8080",
		URI: "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--",
	}, "")
	require.NoError(t, err)
	return v.Decision
}

func TestReloadOnConfigMapSwap(t *testing.T) {
	cm := newConfigMapDir(t, configBlock)
	cfg, data := loadTestConfig(t, cm.path())
	reg := prometheus.NewRegistry()
	var got applied
	now := time.Unix(1_800_000_000, 0)
	rl, err := newReloader(cfg, data, fileSource(cm.path()), got.apply, reg, slog.New(slog.DiscardHandler), func() time.Time { return now })
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- rl.watch(ctx, hup) }()
	time.Sleep(100 * time.Millisecond) // let the watch start

	successes := func() float64 { return testutil.ToFloat64(rl.results.WithLabelValues("success")) }
	failures := func() float64 { return testutil.ToFloat64(rl.results.WithLabelValues("failure")) }
	got.mu.Lock()
	got.counted = successes
	got.mu.Unlock()

	// A good swap: the detect rules are in force.
	now = now.Add(time.Minute)
	cm.update(configDetect)
	require.Eventually(t, func() bool { _, n := got.get(); return n == 1 }, 10*time.Second, 20*time.Millisecond)
	insp, _ := got.get()
	require.Equal(t, inspector.Detect, seedDecision(t, insp))
	require.Equal(t, 1.0, successes())
	require.Equal(t, float64(now.Unix()), testutil.ToFloat64(rl.lastOK))

	// A broken file changes nothing and is counted.
	cm.update(mustRead(t, configBroken))
	require.Eventually(t, func() bool { return failures() == 1 }, 10*time.Second, 20*time.Millisecond)
	_, n := got.get()
	require.Equal(t, 1, n, "a broken config is never applied")
	require.Equal(t, float64(now.Unix()), testutil.ToFloat64(rl.lastOK), "the last success time stays")

	// Good again.
	cm.update(configBlock)
	require.Eventually(t, func() bool { _, n := got.get(); return n == 2 }, 10*time.Second, 20*time.Millisecond)
	insp, _ = got.get()
	require.Equal(t, inspector.Deny, seedDecision(t, insp))

	// SIGHUP reloads even an unchanged file.
	hup <- os.Interrupt
	require.Eventually(t, func() bool { _, n := got.get(); return n == 3 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3.0, successes())

	cancel()
	require.NoError(t, <-done)
	got.mu.Lock()
	defer got.mu.Unlock()
	require.Equal(t, []float64{1, 2, 3}, got.countedAt, "each reload is counted before its rules are visible")
}

func TestReloadUnchangedFileIsSkipped(t *testing.T) {
	cm := newConfigMapDir(t, configBlock)
	cfg, data := loadTestConfig(t, cm.path())
	var got applied
	rl, err := newReloader(cfg, data, fileSource(cm.path()), got.apply, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), time.Now)
	require.NoError(t, err)
	require.NoError(t, rl.reload("test", false))
	_, n := got.get()
	require.Zero(t, n)
	require.NoError(t, rl.reload("test", true))
	_, n = got.get()
	require.Equal(t, 1, n)
}

// A reload reads the file once and applies, hashes and logs those bytes,
// even when the file changes between two reads: here every read returns
// new content, alternating between block and detect.
func TestReloadReadsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshwaf.yaml")
	var (
		reads  int
		served [][]byte
		loaded [][]byte
	)
	contents := []string{configDetect, configBlock}
	src := configSource{
		read: func(p string) ([]byte, error) {
			require.Equal(t, path, p)
			data := []byte(fmt.Sprintf("%s# read %d\n", contents[reads%2], reads))
			reads++
			served = append(served, data)
			return data, nil
		},
		load: func(data []byte) (Config, error) {
			loaded = append(loaded, data)
			c := defaultConfig()
			err := decodeConfig(path, data, &c)
			return c, err
		},
	}
	initial := []byte(configBlock)
	cfg, err := src.load(initial)
	require.NoError(t, err)
	loaded = nil
	var logs bytes.Buffer
	var got applied
	rl, err := newReloader(cfg, initial, src, got.apply, prometheus.NewRegistry(), slog.New(slog.NewJSONHandler(&logs, nil)), time.Now)
	require.NoError(t, err)
	require.Zero(t, reads, "the start-up bytes are not read again")

	for i, want := range []inspector.Decision{inspector.Detect, inspector.Deny, inspector.Detect} {
		logs.Reset()
		require.NoError(t, rl.reload("test", false))
		require.Equal(t, i+1, reads, "one read per reload")
		require.Equal(t, served[i], loaded[i], "the bytes loaded are the bytes read")
		insp, n := got.get()
		require.Equal(t, i+1, n)
		require.Equal(t, want, seedDecision(t, insp), "the rules applied are those of the bytes read")
		var line struct {
			Msg    string `json:"msg"`
			SHA256 string `json:"sha256"`
		}
		require.NoError(t, json.Unmarshal(logs.Bytes(), &line))
		require.Equal(t, "config reloaded", line.Msg)
		sum := sha256.Sum256(served[i])
		require.Equal(t, hex.EncodeToString(sum[:]), line.SHA256, "the logged hash is of the bytes applied")
		require.Equal(t, sum, rl.sum)
	}
}

// TestMetricNames lints every metric serve exports with promlint.
func TestMetricNames(t *testing.T) {
	families := servedFamilies(t)
	names := map[string]bool{}
	for _, mf := range families {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"meshwaf_checks_total", "meshwaf_config_reloads_total",
		"meshwaf_config_last_reload_success_timestamp_seconds", "meshwaf_build_info", "go_goroutines", "process_resident_memory_bytes"} {
		require.True(t, names[want], "missing %s", want)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
}
