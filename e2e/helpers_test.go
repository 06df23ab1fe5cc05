package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshwaf/meshwaf/internal/checkreq"
)

// binPath is the meshwaf binary built once by TestMain.
var binPath string

// Timeouts of the harness.
const (
	readyTimeout = 20 * time.Second // from start until /readyz answers 200
	exitTimeout  = 45 * time.Second // from SIGTERM until the process is gone
	rpcTimeout   = 15 * time.Second // one Check
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meshwaf-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "meshwaf")
	if err := buildBinary(binPath); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building meshwaf:", err)
		return 1
	}
	return m.Run()
}

// goTool returns the go command of the toolchain running the tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// moduleRoot is the directory of go.mod (the parent of this package).
func moduleRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	return filepath.Abs("..")
}

func buildBinary(out string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	// The build that ships: the script CI and the Dockerfile run.
	cmd := exec.Command("sh", filepath.Join("scripts", "build.sh"), out, "e2e")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the complete (newline-terminated) lines written so far.
func (b *syncBuffer) lines() []string {
	s := b.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// proc is one running `meshwaf serve`.
type proc struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	stdout    *syncBuffer // audit log (JSON lines)
	stderr    *syncBuffer // operational log (JSON lines)
	done      chan struct{}
	exitCode  int // valid once done is closed
}

// freePort returns a 127.0.0.1 address whose port was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// cleanEnv is the test's environment without MESHWAF_* variables, plus extra.
func cleanEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHWAF_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startServer starts `meshwaf serve` on two free loopback ports and waits
// until /readyz answers 200. The process gets SIGTERM when the test ends.
func startServer(t testing.TB, extraArgs ...string) *proc {
	t.Helper()
	return startServerEnv(t, nil, extraArgs...)
}

// startServerEnv is startServer with extra environment variables.
func startServerEnv(t testing.TB, env []string, extraArgs ...string) *proc {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := tryStart(t, env, extraArgs)
		if err == nil {
			return p
		}
		lastErr = err
		// Another test may have taken one of the ports between our probe
		// and the server's bind; try other ports.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting meshwaf serve: %v", lastErr)
	return nil
}

func tryStart(t testing.TB, env, extraArgs []string) (*proc, error) {
	t.Helper()
	p := &proc{
		grpcAddr:  freePort(t),
		adminAddr: freePort(t),
		stdout:    &syncBuffer{},
		stderr:    &syncBuffer{},
		done:      make(chan struct{}),
	}
	args := append([]string{"serve", "--grpc-address", p.grpcAddr, "--admin-address", p.adminAddr}, extraArgs...)
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = cleanEnv(env)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()

	deadline := time.Now().Add(readyTimeout)
	for {
		if p.exited() {
			return nil, fmt.Errorf("exited with code %d before it was ready; stderr:\n%s", p.exitCode, p.stderr.String())
		}
		// The "serving" line proves that this process holds both ports (and
		// that /readyz is not answered by another test's server).
		if strings.Contains(p.stderr.String(), `"msg":"serving"`) {
			if code, _ := p.httpGet("/readyz"); code == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("/readyz not 200 after %v; stderr:\n%s", readyTimeout, p.stderr.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(exitTimeout):
				t.Errorf("meshwaf serve did not exit %v after SIGTERM; killing it", exitTimeout)
				p.kill()
			}
		}
		if t.Failed() {
			t.Logf("meshwaf serve stderr:\n%s", p.stderr.String())
			t.Logf("meshwaf serve stdout:\n%s", p.stdout.String())
		}
	})
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// sigterm sends SIGTERM and returns when it was sent.
func (p *proc) sigterm(t testing.TB) time.Time {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	return time.Now()
}

// waitExit waits up to d for the process to exit and returns its exit code.
func (p *proc) waitExit(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(d):
		t.Fatalf("meshwaf serve still running %v after SIGTERM; stderr:\n%s", d, p.stderr.String())
		return -1
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// httpGet fetches path from the admin server.
func (p *proc) httpGet(path string) (int, string) {
	resp, err := httpClient.Get("http://" + p.adminAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// dial returns a client connection to the gRPC address, closed at cleanup.
func (p *proc) dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// check sends one CheckRequest on a new connection and requires no gRPC error.
func (p *proc) check(t testing.TB, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	return checkOn(t, p.dial(t), req)
}

func checkOn(t testing.TB, conn *grpc.ClientConn, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	require.NoError(t, err, "Check")
	require.NotNil(t, resp.GetStatus(), "CheckResponse.status")
	return resp
}

// metrics scrapes /metrics and parses the text exposition.
func (p *proc) metrics(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get("http://" + p.adminAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "parsing /metrics")
	return mfs
}

// labelsMatch reports whether m carries every label in want.
func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// metricValue sums the counter, gauge or untyped values of the series of
// name matching labels. found is false when no series matches.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, found bool) {
	for _, m := range mfs[name].GetMetric() {
		if !labelsMatch(m, labels) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, found
}

// histogramCount sums the sample counts of the histogram series of name.
func histogramCount(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	var n uint64
	for _, m := range mfs[name].GetMetric() {
		if labelsMatch(m, labels) && m.Histogram != nil {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logLines parses JSON lines; a line that is not JSON fails the test.
func logLines(t testing.TB, lines []string) []map[string]any {
	t.Helper()
	out := make([]map[string]any, 0, len(lines))
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "log line is not JSON: %q", l)
		out = append(out, m)
	}
	return out
}

// auditLines returns the parsed audit lines the server wrote so far.
func (p *proc) auditLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range logLines(t, p.stdout.lines()) {
		if m["log_type"] == "audit" {
			out = append(out, m)
		}
	}
	return out
}

// logMessages returns the "msg" of every operational log line.
func (p *proc) logMessages(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, m := range logLines(t, p.stderr.lines()) {
		if s, ok := m["msg"].(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func (p *proc) hasLogMessage(t testing.TB, msg string) bool {
	t.Helper()
	for _, m := range p.logMessages(t) {
		if m == msg {
			return true
		}
	}
	return false
}

// --- CheckRequest builders -------------------------------------------------

// Principals and addresses of the mesh workloads in the requests.
const (
	srcPrincipal = "spiffe://cluster.local/ns/default/sa/www"
	dstPrincipal = "spiffe://cluster.local/ns/default/sa/db"
	srcAddress   = "10.0.0.5"
	dstAddress   = "10.0.0.9"
)

// seedSQLiPath is the request target of the SQL injection used throughout.
const seedSQLiPath = "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"

// seedSQLiRules are the rules meshwaf's default profile reports for
// seedSQLiPath: CRS 4.25's two PL1 SQLi rules (942190 held until
// corroborated, 461020, by 942360), the selected PL2 rule 942480 (it scores
// only with a second selected rule) and the anomaly evaluation.
const seedSQLiRules = "461020,942190,942360,942480,949110"

// httpCheck is the parts of an HTTP request that vary between tests.
type httpCheck struct {
	streamID  string // attributes.request.http.id: Envoy's stream id
	requestID string // x-request-id header
	method    string
	path      string
	host      string // "" leaves attributes.request.http.host empty
	protocol  string // default HTTP/1.1
	headers   map[string]string
	body      string
}

// request builds a CheckRequest the way Envoy's HTTP ext_authz filter does
// with with_request_body: pseudo-headers in the header map, lower-case names,
// the body as a string with x-envoy-auth-partial-body.
func (c httpCheck) request() *authv3.CheckRequest {
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.protocol == "" {
		c.protocol = "HTTP/1.1"
	}
	authority := c.host
	if authority == "" {
		authority = "api.default.svc.cluster.local:8080"
	}
	h := map[string]string{
		"user-agent":   "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"accept":       "*/*",
		"x-request-id": c.requestID,
	}
	if c.body != "" {
		h["content-length"] = fmt.Sprint(len(c.body))
		h["x-envoy-auth-partial-body"] = "false"
	}
	maps.Copy(h, c.headers)
	return checkreq.HTTP{
		StreamID:    c.streamID,
		Method:      c.method,
		Path:        c.path,
		Authority:   authority,
		Host:        c.host,
		Protocol:    c.protocol,
		Headers:     h,
		Body:        c.body,
		Source:      checkreq.Peer(srcAddress, 41234, srcPrincipal),
		Destination: checkreq.Peer(dstAddress, 8080, dstPrincipal),
	}.CheckRequest()
}

// sqliCheck is the seed SQL injection as a GET to the db service.
func sqliCheck(streamID, requestID string) *authv3.CheckRequest {
	return httpCheck{
		streamID:  streamID,
		requestID: requestID,
		path:      seedSQLiPath,
		host:      "db.default.svc.cluster.local:8080",
	}.request()
}

// cleanCheck is a normal JSON POST.
func cleanCheck(streamID, requestID string) *authv3.CheckRequest {
	return httpCheck{
		streamID:  streamID,
		requestID: requestID,
		method:    http.MethodPost,
		path:      "/api/v1/orders",
		host:      "shop.default.svc.cluster.local:8080",
		headers:   map[string]string{"content-type": "application/json"},
		body:      `{"customer":"joe@example.com","items":[{"sku":"A-1001","qty":2},{"sku":"B-2002","qty":1}],"note":"leave at the door"}`,
	}.request()
}

// verdict is the dynamic metadata of one CheckResponse.
type verdict struct {
	decision string
	score    float64
	ruleIDs  string
	profile  string
}

// verdictOf reads the meshwaf dynamic metadata, requiring exactly the four
// documented keys with the documented types.
func verdictOf(t testing.TB, resp *authv3.CheckResponse) verdict {
	t.Helper()
	md := resp.GetDynamicMetadata()
	require.NotNil(t, md, "dynamic_metadata")
	keys := make([]string, 0, len(md.GetFields()))
	for k := range md.GetFields() {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"meshwaf_decision", "meshwaf_anomaly_score", "meshwaf_rule_ids", "meshwaf_profile"}, keys)
	str := func(k string) string {
		v, ok := md.GetFields()[k].GetKind().(*structpb.Value_StringValue)
		require.True(t, ok, "%s is not a string: %v", k, md.GetFields()[k])
		return v.StringValue
	}
	num, ok := md.GetFields()["meshwaf_anomaly_score"].GetKind().(*structpb.Value_NumberValue)
	require.True(t, ok, "meshwaf_anomaly_score is not a number: %v", md.GetFields()["meshwaf_anomaly_score"])
	return verdict{
		decision: str("meshwaf_decision"),
		score:    num.NumberValue,
		ruleIDs:  str("meshwaf_rule_ids"),
		profile:  str("meshwaf_profile"),
	}
}

// --- raw wire messages -----------------------------------------------------

// wireWithBytes marshals m and then replaces each placeholder (a key of
// repl, which m must contain exactly once on the wire) with its value of
// the same length, so every length prefix stays valid.
func wireWithBytes(m proto.Message, repl map[string]string) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	for ph, v := range repl {
		if len(ph) != len(v) {
			return nil, fmt.Errorf("placeholder %q: length %d, replacement %d", ph, len(ph), len(v))
		}
		if n := bytes.Count(b, []byte(ph)); n != 1 {
			return nil, fmt.Errorf("placeholder %q found %d times on the wire", ph, n)
		}
		i := bytes.Index(b, []byte(ph))
		copy(b[i:], v)
	}
	return b, nil
}

// placeholder returns an ASCII string as long as s, unique by tag.
func placeholder(tag string, s string) string {
	p := "@@" + tag + "@@"
	if len(p) > len(s) {
		panic("placeholder longer than its replacement")
	}
	return p + strings.Repeat("#", len(s)-len(p))
}
