// Package extauthz serves Envoy's ext_authz gRPC v3 API
// (envoy.service.auth.v3.Authorization/Check) with an inspector.RuleSet.
// It maps CheckRequests onto inspector requests, verdicts onto
// CheckResponses, and owns the check metrics, the audit log, and the gRPC
// health service with the drain sequence (Health).
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/meshwaf/meshwaf/inspector"
)

// Inspector is what the server needs of an *inspector.RuleSet.
type Inspector interface {
	Inspect(ctx context.Context, req inspector.Request, profile string) (inspector.Verdict, error)
}

// Options configure a Server. Engine, Logger and Registerer are required.
type Options struct {
	Engine     Inspector
	Selector   *Selector             // chooses profiles; nil always uses the default
	Logger     *slog.Logger          // operational log
	Audit      *slog.Logger          // audit lines; nil disables them
	AuditAll   bool                  // audit clean checks too
	Registerer prometheus.Registerer // where the check metrics are registered
	// FailOpen answers OK when a check cannot be inspected (error, panic
	// or over the Limits). The default is to deny with FailureStatus.
	FailOpen      bool
	FailureStatus int // HTTP status of a fail-closed answer; default 403
	// Limits bound the inspections in flight; checks over them are
	// answered by the failure policy. A zero MaxInFlight takes
	// DefaultLimits for GOMAXPROCS CPUs and no known memory limit.
	Limits Limits
	Now    func() time.Time // clock; default time.Now
	// AuditRawValues logs query values and matched values unmasked
	// (debugging only); by default they are masked (see audit).
	AuditRawValues bool
}

// Server implements authv3.AuthorizationServer. It is safe for concurrent
// use by any number of gRPC handlers.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	opts    Options
	metrics *metrics
	adm     *admission
	streams *streamGate
	current atomic.Pointer[snapshot]
}

// snapshot is the rules and profile selection in force; replaced whole.
type snapshot struct {
	insp Inspector
	sel  *Selector
}

// NewServer validates opts and registers the metrics.
func NewServer(opts Options) (*Server, error) {
	if opts.Engine == nil || opts.Logger == nil || opts.Registerer == nil {
		return nil, errors.New("extauthz: Engine, Logger and Registerer are required")
	}
	if opts.FailureStatus == 0 {
		opts.FailureStatus = inspector.DefaultDenyStatus
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Limits.MaxInFlight == 0 {
		opts.Limits = DefaultLimits(Resources{CPUs: runtime.GOMAXPROCS(0)})
	}
	if opts.Limits.MaxStreams == 0 {
		opts.Limits.MaxStreams = StreamsPerInFlight * opts.Limits.MaxInFlight
	}
	opts.Limits.MaxStreams = max(opts.Limits.MaxStreams, opts.Limits.MaxInFlight)
	if l := opts.Limits; l.MaxInFlight < 0 || l.MaxBodyBytes <= 0 || l.QueueWait < 0 {
		return nil, fmt.Errorf("extauthz: invalid limits %+v", l)
	}
	adm := newAdmission(opts.Limits)
	m, err := newMetrics(opts.Registerer, adm)
	if err != nil {
		return nil, fmt.Errorf("extauthz: registering metrics: %w", err)
	}
	s := &Server{opts: opts, metrics: m, adm: adm}
	s.streams = &streamGate{max: int64(opts.Limits.MaxStreams), refuse: m.rejected.WithLabelValues(RejectStreams).Inc}
	s.current.Store(&snapshot{insp: opts.Engine, sel: opts.Selector})
	return s, nil
}

// Update replaces the inspector and the profile selection together,
// atomically: a check uses either the old pair or the new one. Checks in
// flight finish on the pair they started with.
func (s *Server) Update(insp Inspector, sel *Selector) {
	s.current.Store(&snapshot{insp: insp, sel: sel})
}

// ServerOptions returns the gRPC server options the service needs: the
// codec that tolerates invalid UTF-8 in CheckRequests.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newLenientCodec(s.metrics.lenient.Inc)),
		grpc.InTapHandle(s.streams.tap),
	}
}

// Register adds the Authorization service to g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Limits returns the limits in force.
func (s *Server) Limits() Limits { return s.opts.Limits }

// Check answers one CheckRequest. It never returns a gRPC error: a request
// that cannot be inspected is answered by the failure policy, and a panic
// anywhere in the check is recovered and answered the same way. A check
// over the Limits is answered by the failure policy as soon as its queue
// wait ends. A check whose ctx ends before its verdict is counted as
// canceled, never as a decision.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, _ error) {
	var (
		r       inspector.Request
		profile string
	)
	// Installed first, so it runs after every other deferred call.
	defer func() {
		if p := recover(); p != nil {
			s.opts.Logger.Error("panic in check", "request_id", r.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp = s.fail(reasonPanic, profile, r.ID)
		}
	}()
	r, hint, ok := requestFrom(req)
	if !ok {
		s.metrics.networkChecks.Inc()
		return networkResponse(), nil
	}
	cur := s.current.Load()
	profile = cur.sel.Select(hint)
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	start := s.opts.Now()
	if ctx.Err() != nil { // expired before it arrived
		return s.fail(reasonCanceled, profile, r.ID), nil
	}
	release, reason, err := s.adm.acquire(ctx, int64(len(r.Body)), s.opts.Now)
	switch {
	case err != nil:
		return s.fail(reasonCanceled, profile, r.ID), nil
	case reason != "":
		s.metrics.rejected.WithLabelValues(reason).Inc()
		s.opts.Logger.Debug("check rejected", "request_id", r.ID, "reason", reason)
		return s.answerFailure(profile, r.ID), nil
	}
	defer release()

	v, err := cur.insp.Inspect(ctx, r, profile)
	if err != nil {
		reason := reasonInspect
		if errors.Is(err, inspector.ErrCanceled) || ctx.Err() != nil {
			reason = reasonCanceled
		}
		s.opts.Logger.Warn("check failed", "request_id", r.ID, "reason", reason, "error", err)
		return s.fail(reason, profile, r.ID), nil
	}
	if ctx.Err() != nil { // the caller gave up: the verdict goes nowhere
		return s.fail(reasonCanceled, profile, r.ID), nil
	}
	s.metrics.observe(v, s.opts.Now().Sub(start).Seconds())
	if d := v.Preselect.Disagreement; len(d) > 0 {
		s.opts.Logger.Error("rule pre-selection disagreed with full evaluation; the full verdict was used",
			"request_id", r.ID, "profile", v.Profile, "rule_ids", d)
	}
	audit(ctx, &s.opts, &r, v)
	return responseFrom(v, r.ID), nil
}

func (s *Server) fail(reason, profile, requestID string) *authv3.CheckResponse {
	s.metrics.errors.WithLabelValues(reason).Inc()
	return s.answerFailure(profile, requestID)
}

// answerFailure is the failure policy's answer.
func (s *Server) answerFailure(profile, requestID string) *authv3.CheckResponse {
	if profile == "" {
		profile = inspector.DefaultProfileName
	}
	return failureResponse(s.opts.FailOpen, s.opts.FailureStatus, profile, requestID)
}
