package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/golden"
)

// syncBuffer is serve's stdout (the audit log), written by the checks.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// tuneCheck is one request of the recorded traffic.
type tuneCheck struct {
	id, ns, method, path, body string
	headers                    map[string]string
}

// Secrets the requests carry; tune's output must hold none of them.
const (
	tuneBearer = "Bearer eyJhbGciOiJub25lIn0.c2VjcmV0LWJlYXJlcg"
	tuneCookie = "sid=7f3a9c1e5b2d4f60"
	tuneToken  = "tok-1b6e9f0c"
)

// tuneTraffic is benign text that CRS PL1 flags, in three variables and
// two profiles, and one attack.
var tuneTraffic = []tuneCheck{
	{id: "s-1", method: "GET", path: "/search?comment=union+was+a+great+select&access_token=" + tuneToken, headers: map[string]string{"authorization": tuneBearer}},
	{id: "s-2", method: "GET", path: "/search?comment=union+was+a+great+select"},
	{id: "s-3", method: "GET", path: "/search?comment=union+was+a+great+select&page=2"},
	{id: "h-1", method: "GET", path: "/home", headers: map[string]string{"cookie": tuneCookie + "; note=union was a great select"}},
	{id: "h-2", method: "GET", path: "/home/", headers: map[string]string{"cookie": "note=union was a great select"}},
	{id: "n-1", ns: "notes", method: "POST", path: "/v1/notes", body: `{"body":"JavaScript: Basics of the language"}`, headers: map[string]string{"content-type": "application/json"}},
	{id: "n-2", ns: "notes", method: "PUT", path: "/v1/notes", body: `{"body":"JavaScript: Basics of closures"}`, headers: map[string]string{"content-type": "application/json"}},
	{id: "n-3", ns: "notes", method: "POST", path: "/v1/notes", body: "text=zsh+is+the+best%21", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}},
	{id: "n-4", ns: "notes", method: "POST", path: "/v1/notes", body: "text=zsh+is+the+best%21&tag=shell", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}},
	// Another path: a group of its own, seen once.
	{id: "n-5", ns: "notes", method: "PUT", path: "/v1/notes/7", body: `{"body":"JavaScript: Basics of closures"}`, headers: map[string]string{"content-type": "application/json"}},
	// Once only: --min-count 2 leaves it out.
	{id: "a-1", method: "GET", path: "/search?id=1%27+union+select+password+from+users--"},
}

// recordAuditLog runs tuneTraffic through serve (detect mode, a real gRPC
// client on loopback) and returns serve's stdout: the audit log.
func recordAuditLog(t *testing.T) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	var stdout syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, []string{"serve", "-config", filepath.Join("testdata", "tune", "detect.yaml"),
			"-grpc-address", "127.0.0.1:0", "-admin-address", "127.0.0.1:0"}, strings.NewReader(""), &stdout, pw)
		pw.Close()
	}()
	addr := ""
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"grpc_address"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
			addr = line.Addr
		}
	}
	require.NotEmpty(t, addr, "serve did not start")
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for _, c := range tuneTraffic {
		ns := c.ns
		if ns == "" {
			ns = "shop"
		}
		h := map[string]string{":authority": "app.example", ":method": c.method, ":path": c.path,
			"user-agent": "tune-test", "accept": "*/*", "x-request-id": c.id}
		for k, v := range c.headers {
			h[k] = v
		}
		if c.body != "" {
			h["content-length"] = fmt.Sprint(len(c.body))
		}
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/" + ns + "/sa/default"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: c.id, Method: c.method, Host: "app.example", Path: c.path, Protocol: "HTTP/1.1",
				Headers: h, Body: c.body,
			}},
		}})
		require.NoError(t, err, c.id)
		require.Zero(t, resp.GetStatus().GetCode(), "%s: detect mode lets it pass", c.id)
	}
	cancel()
	require.Equal(t, exitOK, <-done)
	return stdout.Bytes()
}

func runTune(t *testing.T, log []byte, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runMain(context.Background(), append([]string{"tune"}, args...), bytes.NewReader(log), &out, &errOut)
	require.Equal(t, exitOK, code, errOut.String())
	return out.String()
}

// proposals is tune's output read strictly as config.
type proposals struct {
	DefaultProfile struct {
		Exclusions []inspector.Exclusion `yaml:"exclusions"`
	} `yaml:"defaultProfile"`
	Profiles []struct {
		Name       string                `yaml:"name"`
		Exclusions []inspector.Exclusion `yaml:"exclusions"`
	} `yaml:"profiles"`
}

// TestTuneEndToEnd: benign requests that CRS flags run through serve in
// detect mode; tune turns the audit log into exclusions (golden file); in
// a blocking config, those requests were denied without the exclusions
// and pass with them, while an attack in another argument, and one in the
// excluded argument that other rules catch, are still denied.
func TestTuneEndToEnd(t *testing.T) {
	log := recordAuditLog(t)
	got := runTune(t, log, "--min-count", "2")
	golden.Check(t, filepath.Join("testdata", "tune", "proposals.golden"), []byte(got))
	for _, secret := range []string{"eyJhbGciOiJub25lIn0", "7f3a9c1e5b2d4f60", tuneToken, "great select", "JavaScript", "zsh"} {
		require.NotContains(t, got, secret, "tune's output shows a value")
	}

	var p proposals
	dec := yaml.NewDecoder(strings.NewReader(got))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&p))
	require.Len(t, p.Profiles, 1)
	require.Equal(t, "notes", p.Profiles[0].Name)

	dir := t.TempDir()
	writeConfig := func(name string, def, notes []inspector.Exclusion) string {
		cfg := map[string]any{
			"defaultProfile": map[string]any{"mode": "block", "corroboration": false, "exclusions": def},
			"profiles": []any{map[string]any{"name": "notes", "mode": "block", "corroboration": false,
				"match": map[string]any{"namespaces": []string{"notes"}}, "exclusions": notes}},
		}
		data, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, data, 0o644))
		var stderr bytes.Buffer
		require.Equal(t, exitOK, runMain(context.Background(), []string{"config", "validate", f}, nil, io.Discard, &stderr), stderr.String())
		return f
	}
	before := writeConfig("before.yaml", nil, nil)
	after := writeConfig("after.yaml", p.DefaultProfile.Exclusions, p.Profiles[0].Exclusions)

	// Each config compiled once (a compile parses all of CRS); requests
	// built as meshwaf inspect builds them, inspected with its rule set.
	ruleSet := func(file string) compiled {
		t.Helper()
		cfg := defaultConfig()
		require.NoError(t, loadConfigFile(file, &cfg))
		c, err := compileConfig(cfg)
		require.NoError(t, err)
		return c
	}
	rsBefore, rsAfter := ruleSet(before), ruleSet(after)
	verdict := func(c compiled, tc tuneCheck) inspector.Verdict {
		t.Helper()
		var hs []string
		for k, v := range tc.headers {
			hs = append(hs, k+": "+v)
		}
		req, err := buildRequest(tc.method, tc.path, hs, []byte(tc.body))
		require.NoError(t, err)
		v, err := c.rules.Inspect(context.Background(), req, tc.ns)
		require.NoError(t, err)
		return v
	}
	for _, c := range tuneTraffic[:len(tuneTraffic)-1] {
		t.Run("benign "+c.id, func(t *testing.T) {
			require.Equal(t, inspector.Deny, verdict(rsBefore, c).Decision, "denied before tuning")
			v := verdict(rsAfter, c)
			require.Equal(t, inspector.Allow, v.Decision, "allowed with the proposals: %v", v.RuleIDs())
		})
	}
	attacks := []tuneCheck{
		tuneTraffic[len(tuneTraffic)-1],
		{method: "GET", path: "/search?comment=union+was+a+great+select&q=1%27+or+%271%27%3D%271"},
		{method: "GET", path: "/search?comment=1%27+union+select+password+from+users--"},
		{method: "GET", path: "/home", headers: map[string]string{"cookie": "note=union was a great select; theme=1' or '1'='1"}},
		{ns: "notes", method: "POST", path: "/v1/notes", body: `{"body":"JavaScript: Basics","title":"<script>alert(1)</script>"}`, headers: map[string]string{"content-type": "application/json"}},
		{ns: "notes", method: "POST", path: "/v1/notes", body: "text=zsh+is+the+best%21&q=%3Bcat+/etc/passwd"},
	}
	for i, c := range attacks {
		t.Run(fmt.Sprintf("attack %d", i), func(t *testing.T) {
			require.Equal(t, inspector.Deny, verdict(rsAfter, c).Decision, "%s %s still denied with the proposals", c.method, c.path)
		})
	}

	// The workflow's confirmation step: meshwaf inspect with the config.
	for _, tc := range []struct {
		cfg, url string
		want     int
	}{
		{before, "/search?comment=union+was+a+great+select", exitDenied},
		{after, "/search?comment=union+was+a+great+select", exitOK},
		{after, "/search?comment=union+was+a+great+select&id=1%27+union+select+password+from+users--", exitDenied},
	} {
		var out, stderr bytes.Buffer
		code := runMain(context.Background(), []string{"inspect", "--config", tc.cfg, "--url", tc.url}, nil, &out, &stderr)
		require.Equal(t, tc.want, code, "meshwaf inspect --config %s --url %s\n%s%s", filepath.Base(tc.cfg), tc.url, out.String(), stderr.String())
	}

	t.Run("filters", func(t *testing.T) { tuneFilters(t, log) })
}

// tuneFilters: --min-count leaves out rarer groups, --profile other
// profiles' lines; every proposal otherwise.
func tuneFilters(t *testing.T, log []byte) {
	t.Helper()
	all := runTune(t, log)
	require.Contains(t, all, "ruleIds: [942100]", "the attack seen once")
	require.Contains(t, all, "name: notes")
	require.NotContains(t, runTune(t, log, "--min-count", "2"), "942100")
	require.NotContains(t, runTune(t, log, "--min-count", "4"), "ruleIds")
	onlyNotes := runTune(t, log, "--profile", "notes")
	require.Contains(t, onlyNotes, "name: notes")
	require.NotContains(t, onlyNotes, "defaultProfile")
	require.Contains(t, runTune(t, log, "--profile", "nosuch"), "0 exclusions")

	var out, stderr bytes.Buffer
	require.Equal(t, exitUsage, runMain(context.Background(), []string{"tune", "--min-count", "0"}, nil, &out, &stderr))
	require.Equal(t, exitUsage, runMain(context.Background(), []string{"tune", "-f", filepath.Join(t.TempDir(), "missing")}, nil, &out, &stderr))
}
