package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
)

// uploadCheck is a POST of 1 MiB of text: its body phase takes a good part
// of a second even on a fast machine.
func uploadCheck() *authv3.CheckRequest {
	return httpCheck{
		streamID:  "1",
		requestID: "slow",
		method:    http.MethodPost,
		path:      "/api/v1/upload",
		headers:   map[string]string{"content-type": "text/plain"},
		body:      strings.Repeat("lorem ipsum dolor sit amet ", (1<<20)/27),
	}.request()
}

// holdInspection sends uploadCheck and returns once the server has admitted
// it (its body is counted in flight). cancel ends the caller's side; the
// returned wait blocks until the call has returned.
func holdInspection(t *testing.T, p *proc) (cancel func(), wait func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn := p.dial(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = authv3.NewAuthorizationClient(conn).Check(ctx, uploadCheck())
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, rpcTimeout, "the slow check to be admitted", func() bool {
		v, _ := metricValue(p.metrics(t), "meshwaf_check_body_bytes_in_flight", nil)
		return v > 0
	})
	return cancel, wg.Wait
}

// TestFailurePolicyAsServed: a check that cannot be inspected (here: over
// maxInFlight while another runs) is answered by the failure policy that
// serve wires from the file, the flag or the environment: denied with
// failureStatus by default, allowed with failOpen. The rejection is counted
// in meshwaf_checks_rejected_total, and as no decision.
func TestFailurePolicyAsServed(t *testing.T) {
	t.Parallel()
	const limits = "maxInFlight: 1\nqueueWait: 0s\nshutdownTimeout: 2s\n"
	tests := []struct {
		name       string
		config     string
		args, env  []string
		wantStatus int // 0: allowed
	}{
		{name: "fails closed with 403 by default", config: limits, wantStatus: 403},
		{name: "failureStatus 503", config: limits + "failureStatus: 503\n", wantStatus: 503},
		{name: "failOpen in the file", config: limits + "failOpen: true\n"},
		{name: "--fail-open", config: limits, args: []string{"--fail-open"}},
		{name: "MESHWAF_FAIL_OPEN", config: limits, env: []string{"MESHWAF_FAIL_OPEN=true"}},
		{name: "--fail-open=false over the file", config: limits + "failOpen: true\nfailureStatus: 429\n", args: []string{"--fail-open=false"}, wantStatus: 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startServerEnv(t, tt.env, append([]string{"--config", writeConfig(t, tt.config)}, tt.args...)...)
			holdInspection(t, p)

			resp := p.check(t, cleanCheck("2", "over-the-limit"))
			if tt.wantStatus == 0 {
				require.EqualValues(t, 0, resp.GetStatus().GetCode(), "failOpen allows")
				require.NotNil(t, resp.GetOkResponse())
			} else {
				require.EqualValues(t, 7, resp.GetStatus().GetCode(), "fail closed denies")
				require.EqualValues(t, tt.wantStatus, resp.GetDeniedResponse().GetStatus().GetCode())
				require.Contains(t, resp.GetDeniedResponse().GetBody(), "could not be inspected")
			}
			mfs := p.metrics(t)
			rejected, _ := metricValue(mfs, "meshwaf_checks_rejected_total", map[string]string{"reason": "inflight"})
			require.Equal(t, 1.0, rejected)
			decisions, _ := metricValue(mfs, "meshwaf_checks_total", nil)
			require.Zero(t, decisions, "a rejected check is no decision")
		})
	}
}

// TestCanceledCheckIsNoDecision: a check whose caller gives up while its
// body is inspected is counted as canceled once the inspection stops, and
// never in meshwaf_checks_total.
func TestCanceledCheckIsNoDecision(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	cancel, wait := holdInspection(t, p)
	cancel()
	wait()
	waitFor(t, rpcTimeout, "the canceled inspection to stop", func() bool {
		v, _ := metricValue(p.metrics(t), "meshwaf_checks_in_flight", nil)
		return v == 0
	})
	mfs := p.metrics(t)
	canceled, _ := metricValue(mfs, "meshwaf_check_errors_total", map[string]string{"reason": "canceled"})
	require.Equal(t, 1.0, canceled)
	decisions, _ := metricValue(mfs, "meshwaf_checks_total", nil)
	require.Zero(t, decisions, "a canceled check is no decision")
}
