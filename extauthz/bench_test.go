package extauthz

import (
	"context"
	"log/slog"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshwaf/meshwaf/internal/corpus"
)

// loopbackClient serves s on a real 127.0.0.1 socket and dials it.
func loopbackClient(tb testing.TB, s *Server) authv3.AuthorizationClient {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	g := grpc.NewServer(s.ServerOptions()...)
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	tb.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(tb, err)
	tb.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func benchServer(b *testing.B) *Server {
	b.Helper()
	s, err := NewServer(Options{Engine: testEngine(b), Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	require.NoError(b, err)
	return s
}

// BenchmarkCheck measures one Check in process (mapping, inspection,
// response) and through gRPC on loopback.
func BenchmarkCheck(b *testing.B) {
	s := benchServer(b)
	client := loopbackClient(b, s)
	ctx := context.Background()
	for _, c := range corpus.Bench {
		cr := corpus.CheckRequest(c.Request())
		b.Run("inprocess/"+c.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Check(ctx, cr); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("grpc/"+c.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Check(ctx, cr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckParallel drives the gRPC server from GOMAXPROCS clients.
func BenchmarkCheckParallel(b *testing.B) {
	s := benchServer(b)
	client := loopbackClient(b, s)
	for _, c := range corpus.Bench {
		cr := corpus.CheckRequest(c.Request())
		b.Run("grpc/"+c.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Check(context.Background(), cr); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestBenchCorpusVerdicts pins what the benchmark requests decide, so the
// figures measure the intended paths (allow, allow, deny).
func TestBenchCorpusVerdicts(t *testing.T) {
	s, err := NewServer(Options{Engine: testEngine(t), Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	client := loopbackClient(t, s)
	want := map[string]string{"GET": "allow", "JSON1KiB": "allow", "SQLi": "deny"}
	for _, c := range corpus.Bench {
		resp, err := client.Check(context.Background(), corpus.CheckRequest(c.Request()))
		require.NoError(t, err)
		require.Equal(t, want[c.Name], resp.GetDynamicMetadata().AsMap()[MetaDecision], c.Name)
	}
}
