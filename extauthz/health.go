package extauthz

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is the gRPC health service of a serving process and its drain.
// Until Drain, the overall status ("") and the Authorization service are
// SERVING. It is safe for concurrent use.
type Health struct {
	hs       *health.Server
	draining atomic.Bool
	endWatch chan struct{} // closed when Watch streams must end
	once     sync.Once
}

// NewHealth returns a Health reporting SERVING.
func NewHealth() *Health {
	h := &Health{hs: health.NewServer(), endWatch: make(chan struct{})}
	h.hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return h
}

// Register adds the health service to g.
func (h *Health) Register(g *grpc.Server) {
	healthpb.RegisterHealthServer(g, drainingHealth{Server: h.hs, drain: h.endWatch})
}

// Draining reports whether Drain has begun (a readiness probe fails then).
func (h *Health) Draining() bool { return h.draining.Load() }

// Drain stops g as a rolling update needs: every service reports
// NOT_SERVING at once and Draining turns true; after delay (load balancers
// and Envoy's health checks stop sending new checks meanwhile) the health
// Watch streams end and g stops accepting calls, letting the checks in
// flight finish; after timeout the remaining connections are closed. It
// returns when g has stopped. Drain is called once.
func (h *Health) Drain(g *grpc.Server, delay, timeout time.Duration, logger *slog.Logger) {
	h.draining.Store(true)
	h.hs.Shutdown()
	logger.Info("draining", "drain_delay", delay.String(), "timeout", timeout.String())
	if delay > 0 {
		time.Sleep(delay)
	}
	h.once.Do(func() { close(h.endWatch) }) // GracefulStop would wait for open Watch streams
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		logger.Warn("drain timed out; closing connections")
		g.Stop()
	}
}

// drainingHealth is grpc's health server whose Watch streams end when the
// drain channel closes. grpc's own Watch never returns while the client
// stays, so an open Watch would hold GracefulStop until the timeout.
type drainingHealth struct {
	*health.Server
	drain <-chan struct{}
}

func (h drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.drain:
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watchStream{Health_WatchServer: stream, ctx: ctx})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
