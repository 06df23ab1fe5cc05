package discover

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

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

	const timeout = time.Second
	q := Query{At: at, Lookback: 7 * 24 * time.Hour, Step: time.Hour, Timeout: timeout, Address: srv.URL}
	start := time.Now()
	flows, err := ReadFlows(context.Background(), srv.Client(), q)
	elapsed := time.Since(start)

	require.Nil(t, flows)
	require.ErrorContains(t, err, "prometheus at "+srv.URL+" did not answer within 1s (--timeout)")
	require.GreaterOrEqual(t, elapsed, timeout)
	require.Less(t, elapsed, 2*timeout, "six queries two at a time must not take a timeout per round")
	require.EqualValues(t, 2, requests.Load(), "queries after the first failure must not be sent")
}

// TestReadFlowsAnswers: the answer is decoded as Prometheus writes it
// (labels other than the flow's ignored, "unknown" as absent, spiffe://
// trimmed), and errors, warnings and unexpected answers say what came back.
func TestReadFlowsAnswers(t *testing.T) {
	const sample = `{"metric":{"source_workload":"www","source_workload_namespace":"default","source_principal":"spiffe://cluster.local/ns/default/sa/www",
		"destination_workload":"auth","destination_workload_namespace":"default","destination_principal":"unknown","destination_service_name":"auth",
		"destination_service_namespace":"default","connection_security_policy":"mutual_tls","extra":"x"},"value":[1795089600.5,"1795089000"]}`
	tests := []struct {
		name   string
		status int
		body   string
		want   string // error; "" for success
	}{
		{"vector", 200, `{"status":"success","data":{"resultType":"vector","result":[` + sample + `]},"infos":["i"]}`, ""},
		{"warnings after data", 200, `{"status":"success","data":{"resultType":"vector","result":[` + sample + `]},"warnings":["store down"]}`,
			"answered partially (warnings: store down); refusing to build a graph"},
		{"timeout", 503, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`, "gave up on the query after 1m0s (--timeout)"},
		{"bad data", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\""}`, `: bad_data: invalid parameter "query" (query sum by`},
		{"not JSON", 502, `<html>bad gateway</html>`, ": HTTP 502 Bad Gateway (query "},
		{"matrix", 200, `{"status":"success","data":{"resultType":"matrix","result":[]}}`, "answered matrix, want a vector"},
		{"truncated", 200, `{"status":"success","data":{"resultType":"vector","result":[` + sample, "reading the answer: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				require.NoError(t, r.ParseForm())
				require.Equal(t, "1795089600", r.Form.Get("time"))
				require.Equal(t, "60", r.Form.Get("timeout"))
				require.Contains(t, r.Form.Get("query"), `{reporter="destination"}`)
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			q := Query{At: time.Unix(1795089600, 0), Lookback: 7 * 24 * time.Hour, Step: time.Hour, Timeout: time.Minute, Address: srv.URL}
			flows, err := ReadFlows(context.Background(), srv.Client(), q)
			if tt.want != "" {
				require.ErrorContains(t, err, "prometheus at "+srv.URL)
				require.ErrorContains(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			first := time.Unix(1795089000, 0).UTC()
			require.Equal(t, []Flow{{FlowKey: FlowKey{SourceWorkload: "www", SourceNamespace: "default", SourcePrincipal: "cluster.local/ns/default/sa/www",
				DestWorkload: "auth", DestNamespace: "default", DestService: "auth", DestServiceNamespace: "default", Security: "mutual_tls"},
				Requests: 1795089000, Connections: 1795089000, First: first, Last: first}}, flows)
		})
	}
}
