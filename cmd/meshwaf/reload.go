package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

// reloadDebounce gathers the burst of events of one file replacement (a
// ConfigMap update swaps a symlink: several creates, renames and removes).
const reloadDebounce = 200 * time.Millisecond

// configSource is where a Config comes from: read returns the config
// file's bytes (os.ReadFile), load builds the Config from those bytes, then
// flags and environment. A reload reads the file once and loads, hashes and
// applies those same bytes.
type configSource struct {
	read func(path string) ([]byte, error)
	load func(data []byte) (Config, error)
}

// reloader re-reads the config file, compiles every profile aside and, only
// when all of that succeeds, swaps rules and selection in one step. A
// failure keeps what is running, is logged and counted. Safe for
// concurrent use.
type reloader struct {
	path    string
	src     configSource
	apply   func(extauthz.Inspector, *extauthz.Selector)
	logger  *slog.Logger
	now     func() time.Time
	results *prometheus.CounterVec
	lastOK  prometheus.Gauge

	mu      sync.Mutex // serialises reloads
	running Config
	inForce *inspector.RuleSet // closed when a reload replaces it
	sum     [sha256.Size]byte  // of the bytes in force
}

// newReloader returns the reloader of cfg, which was loaded from data (the
// content of cfg's file; nil when there is none).
func newReloader(cfg Config, data []byte, src configSource, apply func(extauthz.Inspector, *extauthz.Selector),
	reg prometheus.Registerer, logger *slog.Logger, now func() time.Time) (*reloader, error) {
	r := &reloader{
		path: cfg.file, src: src, apply: apply, logger: logger, now: now, running: cfg, sum: sha256.Sum256(data),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwaf_config_reloads_total",
			Help: "Config reloads by result (success, failure); a failure keeps the rules in force.",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshwaf_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load (start or reload).",
		}),
	}
	for _, c := range []prometheus.Collector{r.results, r.lastOK} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	r.results.WithLabelValues("success")
	r.results.WithLabelValues("failure")
	r.lastOK.Set(float64(now().Unix()))
	return r, nil
}

// reload loads and applies the file when its content changed, or always
// when force is set. It reads the file once: the bytes hashed, loaded and
// logged (sha256) are the bytes applied. It returns the read, load or
// compile error, if any.
func (r *reloader) reload(trigger string, force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := r.src.read(r.path)
	if err != nil {
		return r.fail(trigger, err)
	}
	sum := sha256.Sum256(data)
	if sum == r.sum && !force {
		return nil
	}
	started := r.now()
	cfg, err := r.src.load(data)
	if err != nil {
		return r.fail(trigger, err)
	}
	c, err := compileConfig(cfg)
	if err != nil {
		return r.fail(trigger, err)
	}
	// Counted before the swap: whoever sees the new rules sees the count.
	r.results.WithLabelValues("success").Inc()
	r.lastOK.Set(float64(r.now().Unix()))
	r.apply(c.rules, c.selector)
	if r.inForce != nil {
		if err := r.inForce.Close(); err != nil {
			r.logger.Warn("releasing the replaced rules", "error", err)
		}
	}
	r.inForce = c.rules
	r.sum = sum
	r.warnRestartOnly(cfg)
	r.running = cfg
	r.logger.Info("config reloaded", "trigger", trigger, "profiles", c.rules.Profiles(),
		"preselect_off", c.rules.PreselectOff(),
		"sha256", hex.EncodeToString(sum[:]), "took", r.now().Sub(started).String())
	return nil
}

func (r *reloader) fail(trigger string, err error) error {
	r.results.WithLabelValues("failure").Inc()
	r.logger.Error("config reload failed; the rules in force are kept", "trigger", trigger, "error", err)
	return err
}

// warnRestartOnly logs settings that a reload cannot change.
func (r *reloader) warnRestartOnly(next Config) {
	old := r.running
	for _, s := range []struct {
		key        string
		was, is    any
		changedNow bool
	}{
		{"grpcAddress", old.GRPCAddress, next.GRPCAddress, old.GRPCAddress != next.GRPCAddress},
		{"adminAddress", old.AdminAddress, next.AdminAddress, old.AdminAddress != next.AdminAddress},
		{"failOpen", old.FailOpen, next.FailOpen, old.FailOpen != next.FailOpen},
		{"failureStatus", old.FailureStatus, next.FailureStatus, old.FailureStatus != next.FailureStatus},
		{"auditAllChecks", old.AuditAllChecks, next.AuditAllChecks, old.AuditAllChecks != next.AuditAllChecks},
		{"auditRawValues", old.AuditRawValues, next.AuditRawValues, old.AuditRawValues != next.AuditRawValues},
		{"logLevel", old.LogLevel, next.LogLevel, old.LogLevel != next.LogLevel},
		{"maxMessageBytes", old.maxMessageBytes(), next.maxMessageBytes(), old.maxMessageBytes() != next.maxMessageBytes()},
		{"maxInFlight", old.MaxInFlight, next.MaxInFlight, old.MaxInFlight != next.MaxInFlight},
		{"maxBodyBytesInFlight", old.MaxBodyBytesInFlight, next.MaxBodyBytesInFlight, old.MaxBodyBytesInFlight != next.MaxBodyBytesInFlight},
		{"queueWait", time.Duration(old.QueueWait), time.Duration(next.QueueWait), old.QueueWait != next.QueueWait},
	} {
		if s.changedNow {
			r.logger.Warn("setting changed in the config file; it takes effect at the next restart",
				"key", s.key, "running", fmt.Sprint(s.was), "file", fmt.Sprint(s.is))
		}
	}
}

// watch reloads on SIGHUP (always) and on changes in the config file's
// directory (when the content changed), until ctx ends. Watching the
// directory, not the file, follows a ConfigMap's symlink swap.
func (r *reloader) watch(ctx context.Context, hup <-chan os.Signal) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", r.path, err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(r.path)); err != nil {
		return fmt.Errorf("watching %s: %w", filepath.Dir(r.path), err)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_ = r.reload("sighup", true)
		case _, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watching %s: watcher closed", r.path)
			}
			timer.Reset(reloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watching %s: watcher closed", r.path)
			}
			r.logger.Warn("config watch error", "error", err)
		case <-timer.C:
			_ = r.reload("file", false)
		}
	}
}

// onHangup answers SIGHUP until ctx ends, where watch does not: it
// reloads the config file, or, when serve has none, logs that there is
// nothing to reload.
func (r *reloader) onHangup(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if r.path == "" {
				r.logger.Warn("SIGHUP ignored: serve runs without a config file, so there is nothing to reload")
				continue
			}
			_ = r.reload("sighup", true)
		}
	}
}

var _ extauthz.Inspector = (*inspector.RuleSet)(nil)
