package extauthz

import (
	"context"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// StreamsPerInFlight is how many Check streams may be open (being
// received, waiting for admission or inspected) per inspection that may
// run: MaxStreams defaults to StreamsPerInFlight × MaxInFlight.
const StreamsPerInFlight = 8

// RejectStreams is the reason of a Check refused before its message was
// read: MaxStreams Check streams were open.
const RejectStreams = "streams"

// checkMethod is the full gRPC name of Authorization/Check.
var checkMethod = "/" + authv3.Authorization_ServiceDesc.ServiceName + "/Check"

// streamGate bounds the Check streams open at once. It runs in gRPC's tap,
// before the request message is read, so that a flood of large bodies is
// refused before its bytes are held in memory: admission (admission.go)
// only sees a check once its message has arrived whole.
type streamGate struct {
	max    int64
	open   atomic.Int64
	refuse func() // counts a refusal
}

// tap admits or refuses a new stream. Other methods (health, reflection)
// always pass. An admitted stream is released when its context ends, which
// gRPC does when the call finishes.
func (g *streamGate) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != checkMethod {
		return ctx, nil
	}
	if g.open.Add(1) > g.max {
		g.open.Add(-1)
		g.refuse()
		return ctx, status.Error(codes.ResourceExhausted, "meshwaf: too many checks in progress")
	}
	context.AfterFunc(ctx, func() { g.open.Add(-1) })
	return ctx, nil
}
