package extauthz

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestHealthDrain: health reports SERVING, turns NOT_SERVING (and Draining
// true) as soon as the drain begins, and an open Watch stream does not hold
// the graceful stop: Drain returns well before its timeout.
func TestHealthDrain(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	h := NewHealth()
	h.Register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		r, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, r.GetStatus(), "service %q", svc)
	}
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())
	require.False(t, h.Draining())

	var logs bytes.Buffer
	done := make(chan time.Duration)
	go func() {
		start := time.Now()
		h.Drain(g, 300*time.Millisecond, 2*time.Second, slog.New(slog.NewJSONHandler(&logs, nil)))
		done <- time.Since(start)
	}()
	next, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.GetStatus(), "NOT_SERVING during the delay")
	require.True(t, h.Draining())
	took := <-done
	require.GreaterOrEqual(t, took, 300*time.Millisecond, "the delay is kept")
	require.Less(t, took, 1500*time.Millisecond, "the open Watch stream did not hold GracefulStop until the timeout")
	require.Contains(t, logs.String(), `"msg":"draining"`)
	require.NotContains(t, logs.String(), "drain timed out")
}
