package discover

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/stretchr/testify/require"
)

// TestReadFlowsSilentPrometheus: a Prometheus that accepts queries and
// never answers fails ReadFlows within about one timeout (not one per
// round of queries), with an error naming the timeout, and the queries
// still waiting are never sent.
func TestReadFlowsSilentPrometheus(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client hanging up
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	defer srv.Close()
	client, err := promapi.NewClient(promapi.Config{Address: srv.URL})
	require.NoError(t, err)

	const timeout = time.Second
	q := Query{At: at, Lookback: 7 * 24 * time.Hour, Step: time.Hour, Timeout: timeout, Address: srv.URL}
	start := time.Now()
	flows, err := ReadFlows(context.Background(), promv1.NewAPI(client), q)
	elapsed := time.Since(start)

	require.Nil(t, flows)
	require.ErrorContains(t, err, "prometheus at "+srv.URL+" did not answer within 1s (--timeout)")
	require.GreaterOrEqual(t, elapsed, timeout)
	require.Less(t, elapsed, 2*timeout, "six queries two at a time must not take a timeout per round")
	require.EqualValues(t, 2, requests.Load(), "queries after the first failure must not be sent")
}
