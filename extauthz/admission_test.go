package extauthz

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

func TestDefaultLimits(t *testing.T) {
	const mi = 1 << 20
	tests := []struct {
		name     string
		r        Resources
		inFlight int
		body     int64
	}{
		{"2 CPUs, no memory limit", Resources{CPUs: 2}, 8, 1 * mi},
		{"2 CPUs, 512Mi: CPU term is smaller", Resources{CPUs: 2, MemoryLimit: 512 * mi}, 8, 1 * mi},
		{"64 CPUs, 512Mi: memory term", Resources{CPUs: 64, MemoryLimit: 512 * mi}, 256, 6 * mi},
		{"16 CPUs, 128Mi: floor of one CPU's bytes", Resources{CPUs: 16, MemoryLimit: 128 * mi}, 64, mi / 2},
		{"unknown CPUs count as one", Resources{}, 4, mi / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits(tt.r)
			require.Equal(t, tt.inFlight, l.MaxInFlight)
			require.Equal(t, tt.body, l.MaxBodyBytes)
			require.Equal(t, DefaultQueueWait, l.QueueWait)
		})
	}
}

func TestDetectResources(t *testing.T) {
	const gi = 1 << 30
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		fs      fstest.MapFS
		goLimit int64
		want    int64
	}{
		{"nothing readable", fstest.MapFS{}, math.MaxInt64, 0},
		{"v2 namespace root", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("536870912\n"),
		}, math.MaxInt64, 512 << 20},
		{"v2 unlimited", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, math.MaxInt64, 0},
		{"v2 process cgroup below the root", fstest.MapFS{
			"proc/self/cgroup":                           file("0::/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max":  file("268435456\n"),
			"sys/fs/cgroup/memory.max":                   file("max\n"),
			"sys/fs/cgroup/kubepods/pod1/memory.max":     file("1073741824\n"),
			"sys/fs/cgroup/kubepods/pod1/c1/memory.high": file("1\n"),
		}, math.MaxInt64, 256 << 20},
		{"v1", fstest.MapFS{
			"proc/self/cgroup": file("12:cpu,cpuacct:/x\n11:memory:/docker/abc\n"),
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": file("1073741824\n"),
		}, math.MaxInt64, gi},
		{"v1 unlimited (page-rounded MaxInt64)", fstest.MapFS{
			"proc/self/cgroup":                           file("11:memory:/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, math.MaxInt64, 0},
		{"garbage", fstest.MapFS{"sys/fs/cgroup/memory.max": file("lots\n")}, math.MaxInt64, 0},
		{"GOMEMLIMIT below the cgroup", fstest.MapFS{"sys/fs/cgroup/memory.max": file("1073741824")}, 300 << 20, 300 << 20},
		{"cgroup below GOMEMLIMIT", fstest.MapFS{"sys/fs/cgroup/memory.max": file("268435456")}, gi, 256 << 20},
		{"GOMEMLIMIT alone", fstest.MapFS{}, gi, gi},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := detectResources(tt.fs, 3, tt.goLimit)
			require.Equal(t, 3, r.CPUs)
			require.Equal(t, tt.want, r.MemoryLimit)
		})
	}
}

// blockingInspector holds every inspection until release is closed.
type blockingInspector struct {
	entered chan struct{}
	release chan struct{}
}

func newBlockingInspector() *blockingInspector {
	return &blockingInspector{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (b *blockingInspector) Inspect(context.Context, inspector.Request, string) (inspector.Verdict, error) {
	b.entered <- struct{}{}
	<-b.release
	return inspector.Verdict{Decision: inspector.Allow, Profile: inspector.DefaultProfileName}, nil
}

// withBody is the clean http2.json fixture carrying n bytes of body.
func withBody(t *testing.T, n int) *authv3.CheckRequest {
	t.Helper()
	cr := loadCheckRequest(t, "http2.json")
	cr.Attributes.Request.Http.Body = strings.Repeat("a", n)
	return cr
}

// TestAdmissionRejects: checks over a bound are answered at once by the
// failure policy and counted by reason, never as decisions.
func TestAdmissionRejects(t *testing.T) {
	tests := []struct {
		name       string
		held       []int // bodies of the checks that hold the slots
		body       int   // body of the check over the bound
		reason     string
		failOpen   bool
		wantStatus int
	}{
		{name: "in flight", held: []int{0, 0}, body: 0, reason: RejectInFlight, wantStatus: 503},
		{name: "body bytes", held: []int{800}, body: 300, reason: RejectBodyBytes, wantStatus: 503},
		{name: "fail open", held: []int{0, 0}, body: 0, reason: RejectInFlight, failOpen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			insp := newBlockingInspector()
			ts := newTestServer(t, insp, func(o *Options) {
				o.Limits = Limits{MaxInFlight: 2, MaxBodyBytes: 1000}
				o.FailOpen = tt.failOpen
				o.FailureStatus = 503
			})
			var wg sync.WaitGroup
			for _, n := range tt.held {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := ts.Check(context.Background(), withBody(t, n))
					require.NoError(t, err)
					require.EqualValues(t, 0, resp.GetStatus().GetCode())
				}()
				<-insp.entered
			}
			start := time.Now()
			resp, err := ts.Check(context.Background(), withBody(t, tt.body))
			require.NoError(t, err)
			require.Less(t, time.Since(start), time.Second, "answered at once")
			if tt.failOpen {
				require.EqualValues(t, 0, resp.GetStatus().GetCode())
				require.NotNil(t, resp.GetOkResponse())
			} else {
				require.EqualValues(t, 7, resp.GetStatus().GetCode())
				require.EqualValues(t, tt.wantStatus, resp.GetDeniedResponse().GetStatus().GetCode())
			}
			require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.rejected.WithLabelValues(tt.reason)))
			close(insp.release)
			wg.Wait()
			require.Equal(t, float64(len(tt.held)), testutil.ToFloat64(ts.metrics.checks.WithLabelValues("allow", "default")),
				"a rejected check is no decision")
			for _, r := range []string{reasonPanic, reasonInspect, reasonCanceled} {
				require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.errors.WithLabelValues(r)), "a rejection is no error")
			}
			require.Zero(t, ts.adm.bodyBytes(), "body bytes released")

			// Room again: the same check is admitted.
			insp.release = make(chan struct{})
			close(insp.release)
			resp, err = ts.Check(context.Background(), withBody(t, tt.body))
			require.NoError(t, err)
			require.EqualValues(t, 0, resp.GetStatus().GetCode())
			<-insp.entered
		})
	}
}

// TestAdmissionQueueWait: a check over a bound waits up to QueueWait for
// room, but never past its deadline.
func TestAdmissionQueueWait(t *testing.T) {
	insp := newBlockingInspector()
	ts := newTestServer(t, insp, func(o *Options) {
		o.Limits = Limits{MaxInFlight: 1, MaxBodyBytes: 1000, QueueWait: time.Minute}
	})
	held := make(chan struct{})
	go func() {
		defer close(held)
		_, _ = ts.Check(context.Background(), withBody(t, 0))
	}()
	<-insp.entered

	// The deadline, not the minute of QueueWait, ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := ts.Check(ctx, withBody(t, 0))
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.EqualValues(t, 7, resp.GetStatus().GetCode())
	require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.rejected.WithLabelValues(RejectInFlight))+
		testutil.ToFloat64(ts.metrics.errors.WithLabelValues(reasonCanceled)), "rejected or canceled, whichever came first")

	// A waiting check is admitted as soon as room is made.
	done := make(chan *authv3.CheckResponse)
	go func() {
		resp, err := ts.Check(context.Background(), withBody(t, 0))
		require.NoError(t, err)
		done <- resp
	}()
	require.Eventually(t, func() bool { return testutil.ToFloat64(ts.metrics.inFlight) == 2 }, 5*time.Second, time.Millisecond)
	close(insp.release)
	<-held
	require.EqualValues(t, 0, (<-done).GetStatus().GetCode())
	require.Equal(t, 2.0, testutil.ToFloat64(ts.metrics.checks.WithLabelValues("allow", "default")))
}

// TestAdmissionLargeBodyRunsAlone: a body over MaxBodyBytes is not
// refused for its size (that would let any caller choose the failure
// policy); it waits until no other body is in flight.
func TestAdmissionLargeBodyRunsAlone(t *testing.T) {
	insp := newBlockingInspector()
	close(insp.release)
	ts := newTestServer(t, insp, func(o *Options) { o.Limits = Limits{MaxInFlight: 4, MaxBodyBytes: 100} })
	resp, err := ts.Check(context.Background(), withBody(t, 10_000))
	require.NoError(t, err)
	require.EqualValues(t, 0, resp.GetStatus().GetCode())
	require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.rejected.WithLabelValues(RejectBodyBytes)))

	a := newAdmission(Limits{MaxInFlight: 4, MaxBodyBytes: 100})
	release, reason, err := a.acquire(context.Background(), 10_000, time.Now)
	require.NoError(t, err)
	require.Empty(t, reason)
	require.EqualValues(t, 100, a.bodyBytes(), "counted as the whole bound")
	_, reason, err = a.acquire(context.Background(), 1, time.Now)
	require.NoError(t, err)
	require.Equal(t, RejectBodyBytes, reason)
	release()
	require.Zero(t, a.bodyBytes())
}

// lateInspector returns an allow verdict only after ctx has ended, as an
// inspection does whose last phase outlives the deadline.
type lateInspector struct{}

func (lateInspector) Inspect(ctx context.Context, _ inspector.Request, _ string) (inspector.Verdict, error) {
	<-ctx.Done()
	return inspector.Verdict{Decision: inspector.Allow, Profile: inspector.DefaultProfileName}, nil
}

// TestCanceledCheckIsNoDecision: a check whose ctx ended is counted as
// canceled, never in meshwaf_checks_total, whatever the inspector said.
func TestCanceledCheckIsNoDecision(t *testing.T) {
	tests := []struct {
		name string
		insp Inspector
		body int
	}{
		{name: "verdict after the deadline", insp: lateInspector{}},
		// The real engine: the deadline passes while a large body is inspected.
		{name: "CRS body phase outlives the deadline", insp: testEngine(t), body: 512 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.insp, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			cr := withBody(t, tt.body)
			if tt.body > 0 {
				cr.Attributes.Request.Http.Headers["content-type"] = "text/plain"
			}
			resp, err := ts.Check(ctx, cr)
			require.NoError(t, err)
			require.EqualValues(t, 7, resp.GetStatus().GetCode(), "fail closed")
			require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.errors.WithLabelValues(reasonCanceled)))
			for _, d := range []inspector.Decision{inspector.Allow, inspector.Deny, inspector.Detect} {
				require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.checks.WithLabelValues(string(d), "default")), d)
			}
		})
	}
}

func TestBodyWeight(t *testing.T) {
	const limit = 4 << 20
	tests := []struct {
		n, want int64
	}{
		{0, 0},
		{1, ArgsWeightPerByte},
		{1 << 10, 128 << 10},
		{4 << 10, MaxArgsWeight},
		{16 << 10, MaxArgsWeight},
		{MaxArgsWeight + 1, MaxArgsWeight + 1},
		{limit + 1, limit},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, bodyWeight(tt.n, limit), "body of %d bytes", tt.n)
	}
	// Bodies that may hold argumentsLimit arguments: four fit in 2 MiB.
	a := newAdmission(Limits{MaxInFlight: 100, MaxBodyBytes: 4 * MaxArgsWeight})
	for range 4 {
		_, reason, err := a.acquire(context.Background(), 16<<10, time.Now)
		require.NoError(t, err)
		require.Empty(t, reason)
	}
	_, reason, err := a.acquire(context.Background(), 16<<10, time.Now)
	require.NoError(t, err)
	require.Equal(t, RejectBodyBytes, reason)
	_, reason, _ = a.acquire(context.Background(), 0, time.Now)
	require.Empty(t, reason, "a check without a body needs only a slot")
}
