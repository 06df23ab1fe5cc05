package extauthz

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamGate: over MaxStreams open Check calls, a call is refused with
// RESOURCE_EXHAUSTED before its message is read, and counted; a finished
// call gives its place back.
func TestStreamGate(t *testing.T) {
	insp := newBlockingInspector()
	ts := newTestServer(t, insp, func(o *Options) {
		o.Limits = Limits{MaxInFlight: 1, MaxBodyBytes: 1 << 20, QueueWait: time.Minute, MaxStreams: 2}
	})
	client := loopbackClient(t, ts.Server)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// One call inspected, one waiting for admission: two streams open.
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := client.Check(ctx, withBody(t, 10))
			done <- err
		}()
	}
	<-insp.entered
	require.Eventually(t, func() bool { return ts.streams.open.Load() == 2 }, 10*time.Second, 5*time.Millisecond)

	_, err := client.Check(ctx, withBody(t, 10))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "the third open call: %v", err)
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.rejected.WithLabelValues(RejectStreams)))

	close(insp.release)
	for range 2 {
		require.NoError(t, <-done)
	}
	require.Eventually(t, func() bool { return ts.streams.open.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
		"finished calls give their places back")
	_, err = client.Check(ctx, withBody(t, 10))
	require.NoError(t, err)
}

// TestStreamGateDefault: MaxStreams defaults to StreamsPerInFlight ×
// MaxInFlight and is never below MaxInFlight.
func TestStreamGateDefault(t *testing.T) {
	ts := newTestServer(t, newBlockingInspector(), func(o *Options) { o.Limits = Limits{MaxInFlight: 3, MaxBodyBytes: 1} })
	require.EqualValues(t, StreamsPerInFlight*3, ts.streams.max)
	ts = newTestServer(t, newBlockingInspector(), func(o *Options) { o.Limits = Limits{MaxInFlight: 3, MaxBodyBytes: 1, MaxStreams: 2} })
	require.EqualValues(t, 3, ts.streams.max)
}
