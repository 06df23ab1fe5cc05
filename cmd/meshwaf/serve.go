package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

func serveCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	var common commonFlags
	common.register(fs)
	grpcAddr := fs.String("grpc-address", "", "gRPC listen address (default "+defaultGRPCAddress+"; env MESHWAF_GRPC_ADDRESS)")
	adminAddr := fs.String("admin-address", "", "admin HTTP address for /metrics, /healthz, /readyz (default "+defaultAdminAddress+"; env MESHWAF_ADMIN_ADDRESS)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info; env MESHWAF_LOG_LEVEL)")
	failOpen := fs.Bool("fail-open", false, "allow requests that cannot be inspected (default deny; env MESHWAF_FAIL_OPEN)")
	set, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	// load decodes the file's bytes and applies flags and environment over
	// them; the reloader calls it again for every change of the file.
	load := func(data []byte) (Config, error) {
		cfg, err := configFrom(&common, set, data)
		if err != nil {
			return Config{}, err
		}
		if set["grpc-address"] {
			cfg.GRPCAddress = *grpcAddr
		}
		if set["admin-address"] {
			cfg.AdminAddress = *adminAddr
		}
		if set["log-level"] {
			cfg.LogLevel = *logLevel
		}
		if set["fail-open"] {
			cfg.FailOpen = *failOpen
		}
		for _, a := range []struct{ flag, addr string }{{"grpc-address", cfg.GRPCAddress}, {"admin-address", cfg.AdminAddress}} {
			if err := checkAddress(a.addr); err != nil {
				return Config{}, usageError{fmt.Errorf("-%s: %w", a.flag, err)}
			}
		}
		return cfg, nil
	}
	data, err := readConfig(&common, os.ReadFile)
	if err != nil {
		return err
	}
	cfg, err := load(data)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return usageError{fmt.Errorf("log level: %w", err)}
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	auditLog := slog.New(slog.NewJSONHandler(stdout, nil))
	return run(ctx, cfg, data, configSource{read: os.ReadFile, load: load}, logger, auditLog)
}

// run serves checks until ctx ends, then drains: health turns NOT_SERVING,
// checks in flight finish (bounded by cfg.ShutdownTimeout), and it returns.
// When cfg came from a file (data, its content), src reads and loads it
// again on change or SIGHUP.
func run(ctx context.Context, cfg Config, data []byte, src configSource, logger, auditLog *slog.Logger) error {
	started := time.Now()
	c, err := compileConfig(cfg)
	if err != nil {
		return usageError{err}
	}
	logger.Info("rules compiled", "crs_version", inspector.CRSVersion, "profiles", c.rules.Profiles(),
		"preselect_off", c.rules.PreselectOff(),
		"paranoia_level", c.rules.Default().ParanoiaLevel, "mode", c.rules.Default().Mode, "took", time.Since(started).String())

	reg := newRegistry()
	res := extauthz.DetectResources(os.DirFS("/"))
	limits := cfg.limits(res)
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && res.MemoryLimit > 0 {
		// The GC keeps the heap below the container's limit rather than
		// letting it double before each collection.
		debug.SetMemoryLimit(res.MemoryLimit / 10 * 9)
	}
	srv, err := extauthz.NewServer(extauthz.Options{
		Engine:        c.rules,
		Selector:      c.selector,
		Logger:        logger,
		Audit:         auditLog,
		AuditAll:      cfg.AuditAllChecks,
		Registerer:    reg,
		FailOpen:      cfg.FailOpen,
		FailureStatus: cfg.FailureStatus,
		// Debugging only: the audit log then carries secrets.
		AuditRawValues: cfg.AuditRawValues,
		Limits:         limits,
	})
	if err != nil {
		return err
	}
	rl, err := newReloader(cfg, data, src, srv.Update, reg, logger, time.Now)
	if err != nil {
		return err
	}
	rl.inForce = c.rules
	// SIGHUP is always caught: its default action would end the process
	// without a drain.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		if cfg.file != "" {
			if err := rl.watch(watchCtx, hup); err != nil {
				logger.Error("config watch stopped; SIGHUP and restarts still reload", "error", err)
			}
		}
		rl.onHangup(watchCtx, hup)
	}()

	grpcLis, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	defer grpcLis.Close()
	adminLis, err := net.Listen("tcp", cfg.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer adminLis.Close()

	opts := append(srv.ServerOptions(),
		grpc.MaxRecvMsgSize(cfg.maxMessageBytes()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	g := grpc.NewServer(opts...)
	srv.Register(g)
	hs := extauthz.NewHealth()
	hs.Register(g)
	reflection.Register(g)

	admin := &http.Server{
		Handler:           adminMux(reg, hs.Draining),
		ReadHeaderTimeout: 5 * time.Second,
	}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(grpcLis) }()
	go func() {
		if err := admin.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	logger.Info("serving", "grpc_address", grpcLis.Addr().String(), "admin_address", adminLis.Addr().String(),
		"fail_open", cfg.FailOpen, "failure_status", cfg.FailureStatus, "max_message_bytes", cfg.maxMessageBytes(),
		"max_in_flight", limits.MaxInFlight, "max_body_bytes_in_flight", limits.MaxBodyBytes, "queue_wait", limits.QueueWait.String(), "max_streams", limits.MaxStreams,
		"cpus", res.CPUs, "memory_limit", res.MemoryLimit, "go_memory_limit", debug.SetMemoryLimit(-1))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		logger.Error("server failed", "error", serveErr)
	}

	delay := time.Duration(cfg.DrainDelay)
	if serveErr != nil {
		delay = 0 // nothing to wait for: the server already failed
	}
	hs.Drain(g, delay, time.Duration(cfg.ShutdownTimeout), logger)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(sctx)
	logger.Info("stopped")
	return serveErr
}

// newRegistry is the registry serve exports on /metrics, before the check
// and reload metrics are added: the process collectors, among them the @rx
// DFAs' memory (shared by every rule set in the process), and build info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshwaf_rx_dfa_bytes",
			Help: "Memory held by the states of the @rx DFAs (bounded; see the README).",
		}, func() float64 { b, _ := inspector.RxDFAStats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshwaf_rx_dfa_resets_total",
			Help: "Times an @rx DFA dropped its states for lack of budget (its values then went to Go's regexp).",
		}, func() float64 { _, n := inspector.RxDFAStats(); return float64(n) }),
	)
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshwaf_build_info",
		Help: "meshwaf build: version and embedded CRS version; always 1.",
	}, []string{"version", "crs_version"})
	buildInfo.WithLabelValues(version(), inspector.CRSVersion).Set(1)
	reg.MustRegister(buildInfo)
	return reg
}

func adminMux(reg *prometheus.Registry, draining func() bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}
