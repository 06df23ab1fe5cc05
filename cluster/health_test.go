package cluster

import (
	"context"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ProbeHealth against a real gRPC health server on 127.0.0.1, and against
// a port nothing listens on.
func TestProbeHealth(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := health.NewServer()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()
	ctx := context.Background()

	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	h := ProbeHealth(ctx, addr, 2*time.Second)
	require.Equal(t, Health{Probed: true, Address: addr, Reachable: true, Status: "SERVING"}, h)

	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	h = ProbeHealth(ctx, addr, 2*time.Second)
	require.True(t, h.Reachable)
	require.Equal(t, "NOT_SERVING", h.Status)

	// A port that was free a moment ago: refused, so not reachable.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := free.Addr().String()
	require.NoError(t, free.Close())
	start := time.Now()
	h = ProbeHealth(ctx, closed, 500*time.Millisecond)
	require.False(t, h.Reachable, "%+v", h)
	require.NotEmpty(t, h.Err)
	require.Less(t, time.Since(start), 5*time.Second, "the timeout bounds the probe")
}
