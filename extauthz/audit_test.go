package extauthz

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshwaf/meshwaf/inspector"
)

func loadAuditFixture(t *testing.T, name string) *authv3.CheckRequest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "audit", name))
	require.NoError(t, err)
	var req authv3.CheckRequest
	require.NoError(t, protojson.Unmarshal(data, &req), name)
	return &req
}

// auditLineOf runs one check through a server with the real CRS and
// returns its audit line.
func auditLineOf(t *testing.T, raw bool, req *authv3.CheckRequest) string {
	t.Helper()
	ts := newTestServer(t, testEngine(t), func(o *Options) { o.AuditRawValues = raw })
	_, err := ts.Check(context.Background(), req)
	require.NoError(t, err)
	lines := ts.audit.lines()
	require.Len(t, lines, 1)
	return lines[0]
}

// TestAuditRedaction: secrets in the query, a JSON field, a cookie and a
// form value never reach the audit line; the rule, the variable and the
// part of the value that matched do. With AuditRawValues they are logged.
func TestAuditRedaction(t *testing.T) {
	tests := []struct {
		fixture string
		secrets []string // logged raw, never by default
		want    []string // logged by default
	}{
		{"query-access-token.json",
			[]string{"eyJhbGciOiJIUzI1NiJ9", "c2VjcmV0LXRva2Vu"},
			[]string{`"path":"/api/items?access_token=[redacted 46 bytes]&q=[redacted 39 bytes]"`, "found within ARGS:q: ", "union select"}},
		{"json-password.json",
			[]string{"Tr0ub4dorX3"},
			[]string{"found within ARGS:json.password: [redacted 11 bytes]' union select 1", `"path":"/api/login"`}},
		{"cookie-value.json",
			[]string{"8c1f9e2ab7d04c55"},
			[]string{"found within REQUEST_COOKIES:session: [redacted 16 bytes]"}},
		{"utf8-value.json",
			[]string{"Ключ", "пароль", "秘密"},
			// 10 Cyrillic letters (2 bytes), 2 CJK (3 bytes), 7 ASCII: 33 bytes.
			[]string{"found within ARGS:json.note: [redacted 33 bytes]' union select 1"}},
		{"null-byte-query.json",
			[]string{"Zm9vYmFyLXJlZnJlc2g"},
			[]string{`"path":"/api/items?refresh_token=[redacted 23 bytes]"`}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			line := auditLineOf(t, false, loadAuditFixture(t, tt.fixture))
			for _, s := range tt.secrets {
				require.NotContains(t, line, s, "the audit line leaks a value")
			}
			for _, w := range tt.want {
				require.Contains(t, line, w)
			}
			require.Contains(t, line, `"host":"api.default.svc.cluster.local:8080"`)
			require.Contains(t, line, `"principal":"spiffe://cluster.local/ns/default/sa/www"`)

			raw := auditLineOf(t, true, loadAuditFixture(t, tt.fixture))
			for _, s := range tt.secrets {
				require.Contains(t, raw, s, "auditRawValues logs values as they are")
			}
			require.NotContains(t, raw, "[redacted")
		})
	}
}

func TestRedactData(t *testing.T) {
	long := strings.Repeat("s", 300) + "<script>"
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", ""},
		{"match inside the value",
			"Matched Data: ' union select 1 found within ARGS:json.password: hunter2' union select 1",
			"Matched Data: ' union select 1 found within ARGS:json.password: [redacted 7 bytes]' union select 1"},
		{"match at both ends",
			"Matched Data: <script found within REQUEST_COOKIES:q: x<script>y",
			"Matched Data: <script found within REQUEST_COOKIES:q: [redacted 1 byte]<script[redacted 2 bytes]"},
		{"only the first occurrence is kept",
			"Matched Data: ' found within ARGS:p: a'b'c",
			"Matched Data: ' found within ARGS:p: [redacted 1 byte]'[redacted 3 bytes]"},
		{"whole value matched",
			"Matched Data: union select found within ARGS: union select",
			"Matched Data: union select found within ARGS: union select"},
		{"the matched part is logged even where it covers the value (942360's ^[\\W\\d]+)",
			"Matched Data: ключ' union select found within ARGS:n: ключ' union select 1",
			"Matched Data: ключ' union select found within ARGS:n: ключ' union select[redacted 2 bytes]"},
		{"matched data not in the value (libinjection fingerprint)",
			"Matched Data: sUE1c found within ARGS:password: hunter2' union select 1--",
			"Matched Data: sUE1c found within ARGS:password: [redacted 25 bytes]"},
		{"empty value",
			"Matched Data: x found within ARGS:a: ",
			"Matched Data: x found within ARGS:a: "},
		{"no Matched Data structure: the request line",
			"GET /x?access_token=abc HTTP/1.1",
			"[redacted 32 bytes]"},
		{"no structure: a Host", "a", "[redacted 1 byte]"},
		{"Matched Data without a variable (922120)",
			"Matched Data: content-transfer-encoding: base64",
			"Matched Data: [redacted 33 bytes]"},
		{"Matched Data: VALUE found within VAR (944100)",
			"Matched Data: java.lang.Runtime found within ARGS:cmd",
			"Matched Data: [redacted 17 bytes] found within ARGS:cmd"},
		{"VAR=VALUE (920270)",
			"ARGS:refresh_token=Zm9v\x00",
			"ARGS:refresh_token=[redacted 5 bytes]"},
		{"VAR=VALUE with '=' in the value",
			"REQUEST_HEADERS:cookie=a=b",
			"REQUEST_HEADERS:cookie=[redacted 3 bytes]"},
		{"unknown collection", "SECRET:x=y", "[redacted 10 bytes]"},
		{"lower-case collection", "args:x=y", "[redacted 8 bytes]"},
		{"key holding ': ' masks more",
			"Matched Data: union found within ARGS:a: b: token union",
			"Matched Data: union found within ARGS:a: [redacted 9 bytes]union"},
		{"matched data holding ' found within '",
			"Matched Data: x found within ARGS:k: y found within ARGS:pw: secret y",
			"Matched Data: x found within ARGS:k: [redacted 32 bytes]"},
		{"cut by the inspector",
			inspector.Truncate("Matched Data: <script> found within ARGS:a: "+long, inspector.MaxMatchData),
			"Matched Data: <script> found within ARGS:a: [redacted 212 bytes]…"},
		{"a short literal … is masked",
			"ARGS:a=x…",
			"ARGS:a=[redacted 4 bytes]"},
		{"UTF-8 around the match",
			"Matched Data: <svg found within ARGS:n: пароль<svg秘密",
			"Matched Data: <svg found within ARGS:n: [redacted 12 bytes]<svg[redacted 6 bytes]"},
		{"invalid UTF-8 is masked, not logged",
			"Matched Data: <svg found within ARGS:n: \xff\xfe<svg\xc3",
			"Matched Data: <svg found within ARGS:n: [redacted 2 bytes]<svg[redacted 1 byte]"},
		{"UTF-8 matched data",
			"Matched Data: ' OR 'ü'='ü found within ARGS:q: ключ' OR 'ü'='ü",
			"Matched Data: ' OR 'ü'='ü found within ARGS:q: [redacted 8 bytes]' OR 'ü'='ü"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := redactData(tt.data)
			require.Equal(t, tt.want, got)
			require.True(t, utf8.ValidString(got), "%q", got)
		})
	}
}

func TestRedactTarget(t *testing.T) {
	tests := []struct {
		name, uri, want string
	}{
		{"no query", "/api/pages/1", "/api/pages/1"},
		{"query values", "/a?access_token=abc&page=2", "/a?access_token=[redacted 3 bytes]&page=[redacted 1 byte]"},
		{"empty value and empty part", "/a?x=&&y=1", "/a?x=&&y=[redacted 1 byte]"},
		{"a bare token", "/cb?eyJhbGciOi", "/cb?[redacted 10 bytes]"},
		{"empty query", "/a?", "/a?"},
		{"';' does not split values", "/a?a=1;token=abc", "/a?a=[redacted 11 bytes]"},
		{"'=' in a value", "/a?t=a=b", "/a?t=[redacted 3 bytes]"},
		{"a '?' in the query", "/a?next=/b?c=d", "/a?next=[redacted 6 bytes]"},
		{"path parameters", "/app;jsessionid=F00D/x;v=1;ro?q=2", "/app;jsessionid=[redacted 4 bytes]/x;v=[redacted 1 byte];ro?q=[redacted 1 byte]"},
		{"UTF-8 and encoding", "/стр/%D0%BF?п=ключ&k=%D0%BF", "/стр/%D0%BF?п=[redacted 8 bytes]&k=[redacted 6 bytes]"},
		{"invalid UTF-8 in a value", "/a?k=\xff\xfe", "/a?k=[redacted 2 bytes]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, redactTarget(tt.uri))
			require.Equal(t, tt.want, RedactTarget(tt.want), "redacting twice")
		})
	}
	t.Run("only masks are kept", func(t *testing.T) {
		for _, v := range []string{"[redacted 0 bytes]", "[redacted 01 bytes]", "[redacted 1 bytes]", "[redacted 2 byte]", "[redacted x bytes]"} {
			require.NotContains(t, redactTarget("/a?k="+v), v)
		}
	})

	t.Run("capped", func(t *testing.T) {
		got := redactTarget("/" + strings.Repeat("p", 2*MaxAuditPath) + "?t=x")
		require.Equal(t, "/"+strings.Repeat("p", MaxAuditPath-1)+"…", got)
		got = redactTarget("/a?" + strings.Repeat("k=v&", 100_000))
		require.LessOrEqual(t, len(got), MaxAuditPath+len("…"))
		require.True(t, strings.HasSuffix(got, "…"))
		require.NotContains(t, got, "=v")
		got = redactTarget("/a?" + strings.Repeat("é", MaxAuditPath))
		require.True(t, utf8.ValidString(got))
	})
}

// TestAuditLineFields: the audit line carries no value outside the
// fields documented as redacted.
func TestAuditLineFields(t *testing.T) {
	line := auditLineOf(t, false, loadAuditFixture(t, "json-password.json"))
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"time", "level", "msg", "log_type", "request_id", "source", "destination", "method", "host",
		"path", "decision", "status", "anomaly_score", "profile", "interrupting_rule", "rules"}, keys)

	// AuditLine reads every field back.
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	var al AuditLine
	require.NoError(t, dec.Decode(&al))
	require.Equal(t, AuditLogType, al.LogType)
	require.False(t, al.Time.IsZero())
	require.Equal(t, "/api/login", al.Path)
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/www", al.Source.Principal)
	require.Equal(t, inspector.Deny, al.Decision)
	require.NotZero(t, al.InterruptingRule)
	require.NotEmpty(t, al.Rules)
	// The first CRS rule names the argument (meshwaf's corroboration rule,
	// 461020, sorts first and names the TX variable it reads).
	var crs []string
	for _, r := range al.Rules {
		if r.ID >= 900000 {
			crs = r.Targets
			break
		}
	}
	require.Contains(t, crs, "ARGS:json.password")
}

// TestAuditRuleTargets: each rule names the variables it matched in, the
// form an exclusion's targets take (what `meshwaf tune` proposes), and
// never a value.
func TestAuditRuleTargets(t *testing.T) {
	tests := []struct {
		fixture, rule string
		want          []string
	}{
		{"json-password.json", "942", []string{"ARGS:json.password"}},
		{"cookie-value.json", "942", []string{"REQUEST_COOKIES:session"}},
		{"query-access-token.json", "942", []string{"ARGS:q"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			var line struct {
				Rules []struct {
					ID      int      `json:"id"`
					Targets []string `json:"targets"`
				} `json:"rules"`
			}
			require.NoError(t, json.Unmarshal([]byte(auditLineOf(t, false, loadAuditFixture(t, tt.fixture))), &line))
			found := false
			for _, r := range line.Rules {
				if strings.HasPrefix(strconv.Itoa(r.ID), tt.rule) {
					require.Equal(t, tt.want, r.Targets, "rule %d", r.ID)
					found = true
				}
				if r.ID == 949110 {
					require.Equal(t, []string{"TX:blocking_inbound_anomaly_score"}, r.Targets)
				}
			}
			require.True(t, found, "no rule %s... matched", tt.rule)
		})
	}
}
