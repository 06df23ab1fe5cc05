package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshwaf/meshwaf/e2e/envoy"
)

// TestGRPCCallThroughSidecar runs a real gRPC call (grpc-go client, HTTP/2,
// protobuf) through the stand-in sidecar to a real gRPC server, with the
// real meshwaf binary as the authorization service: a call whose request
// message carries an injection is refused with PERMISSION_DENIED before it
// reaches the server, an ordinary one gets the server's answer.
func TestGRPCCallThroughSidecar(t *testing.T) {
	p := startServer(t)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	upstream := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("orders.v1.Orders", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(upstream, hs)
	go func() { _ = upstream.Serve(lis) }()
	t.Cleanup(upstream.Stop)

	sidecar, err := envoy.Start(envoy.Config{
		AuthzAddress:    p.grpcAddr,
		Upstream:        "http://" + lis.Addr().String(),
		Timeout:         5 * time.Second,
		WithRequestBody: &envoy.BufferSettings{MaxRequestBytes: 1 << 20, AllowPartialMessage: true, PackAsBytes: true},
		HTTP2:           true,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sidecar.Close() })

	conn, err := grpc.NewClient(sidecar.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders.v1.Orders"})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "x' UNION SELECT password FROM users--"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "error %v", err)

	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "; cat /etc/passwd"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "error %v", err)

	st := sidecar.Stats()
	require.Equal(t, int64(1), st.OK, "stats %+v", st)
	require.Equal(t, int64(2), st.Denied, "stats %+v", st)
	require.Equal(t, int64(1), st.Upstream, "only the ordinary call reached the server: %+v", st)
}
