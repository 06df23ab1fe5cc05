package envoy

// Each test follows one documented Envoy behaviour, cited above it. The
// references are Envoy's API documentation (envoyproxy.io, "ext_authz.proto",
// "external_auth.proto", "attribute_context.proto"), the filter's page
// (configuration/http/http_filters/ext_authz_filter) and the filter's
// source in envoyproxy/envoy (source/extensions/filters/http/ext_authz/
// ext_authz.cc, source/extensions/filters/common/ext_authz/
// check_request_utils.cc).

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeAuthz is an authorization service answering with a function.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	reqs   []*authv3.CheckRequest
	answer func(*authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func (f *fakeAuthz) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	return f.answer(r)
}

func (f *fakeAuthz) calls() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.reqs...)
}

func allow(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}, nil
}

func startAuthz(t *testing.T, answer func(*authv3.CheckRequest) (*authv3.CheckResponse, error)) (*fakeAuthz, string) {
	t.Helper()
	f := &fakeAuthz{answer: answer}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return f, lis.Addr().String()
}

// upstream records what reached the service.
type upstream struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
	srv  *httptest.Server
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, r)
		u.body = append(u.body, string(b))
		u.mu.Unlock()
		w.Header().Set("X-Upstream", "yes")
		_, _ = io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	require.NotEmpty(t, u.reqs, "nothing reached the upstream")
	return u.reqs[len(u.reqs)-1], u.body[len(u.body)-1]
}

func startProxy(t *testing.T, cfg Config) (*Proxy, *[]Entry) {
	t.Helper()
	var mu sync.Mutex
	entries := &[]Entry{}
	cfg.AccessLog = func(e Entry) {
		mu.Lock()
		*entries = append(*entries, e)
		mu.Unlock()
	}
	p, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, entries
}

// rawHTTP sends bytes on a new connection and returns the response.
func rawHTTP(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// attribute_context.proto, HttpRequest: "headers: ... If multiple headers
// share the same key, they must be merged ... All header keys must be
// lower-cased"; "path: The request target, as it appears in the first line
// of the HTTP request. This includes the URL path and query-string. No
// decoding is performed"; query and fragment "always empty"; "protocol:
// HTTP/1.0, HTTP/1.1, or HTTP/2". check_request_utils.cc sets id to the
// stream id, host to :authority, adds the pseudo-headers of the header map
// (HTTP/1's Host is :authority there) and merges repeated values with ",".
// The connection manager adds x-request-id (generate_request_id, default
// true) and x-forwarded-proto.
func TestCheckRequestAttributes(t *testing.T) {
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, AcceptHTTP10: true})

	raw := "GET /api/v1/users/42?expand=roles&q=%27a%20b HTTP/1.1\r\n" +
		"Host: auth.default.svc.cluster.local:8080\r\n" +
		"X-Custom: one\r\nX-Custom: two\r\nAccept: */*\r\nUser-Agent: curl/8.5.0\r\n\r\n"
	status, _ := rawHTTP(t, p.Addr(), raw)
	require.Equal(t, http.StatusOK, status)

	calls := f.calls()
	require.Len(t, calls, 1)
	h := calls[0].GetAttributes().GetRequest().GetHttp()
	assert.Equal(t, "GET", h.GetMethod())
	assert.Equal(t, "/api/v1/users/42?expand=roles&q=%27a%20b", h.GetPath(), "raw target with the query, not decoded")
	assert.Empty(t, h.GetQuery())
	assert.Empty(t, h.GetFragment())
	assert.Equal(t, "auth.default.svc.cluster.local:8080", h.GetHost())
	assert.Equal(t, "http", h.GetScheme())
	assert.Equal(t, "HTTP/1.1", h.GetProtocol())
	_, err := strconv.ParseUint(h.GetId(), 10, 64)
	assert.NoError(t, err, "id %q is Envoy's stream id, a decimal uint64", h.GetId())
	hdr := h.GetHeaders()
	assert.NotEqual(t, hdr["x-request-id"], h.GetId(), "id is the stream id, not x-request-id")
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, hdr["x-request-id"])
	assert.Equal(t, "one,two", hdr["x-custom"])
	assert.Equal(t, "auth.default.svc.cluster.local:8080", hdr[":authority"])
	assert.Equal(t, "GET", hdr[":method"])
	assert.Equal(t, "/api/v1/users/42?expand=roles&q=%27a%20b", hdr[":path"])
	assert.Equal(t, "http", hdr[":scheme"])
	assert.Equal(t, "http", hdr["x-forwarded-proto"])
	assert.NotContains(t, hdr, "host", "Host is :authority in Envoy's header map")
	for k := range hdr {
		assert.Equal(t, strings.ToLower(k), k, "header keys are lower-case")
	}
	assert.NotContains(t, hdr, "x-envoy-auth-partial-body", "no body settings, no partial-body header")

	src := calls[0].GetAttributes().GetSource().GetAddress().GetSocketAddress()
	dst := calls[0].GetAttributes().GetDestination().GetAddress().GetSocketAddress()
	assert.Equal(t, "127.0.0.1", src.GetAddress())
	assert.NotZero(t, src.GetPortValue())
	assert.Equal(t, p.Addr(), net.JoinHostPort(dst.GetAddress(), strconv.Itoa(int(dst.GetPortValue()))))

	r, _ := up.last(t)
	assert.Equal(t, "/api/v1/users/42?expand=roles&q=%27a%20b", r.RequestURI, "forwarded target")
	assert.Equal(t, hdr["x-request-id"], r.Header.Get("X-Request-Id"), "the same request id upstream")

	// An x-request-id from the client is kept; HTTP/1.0 is reported as such.
	status, _ = rawHTTP(t, p.Addr(), "GET /x HTTP/1.0\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n")
	require.Equal(t, http.StatusOK, status)
	h = f.calls()[1].GetAttributes().GetRequest().GetHttp()
	assert.Equal(t, "abc-123", h.GetHeaders()["x-request-id"])
	assert.Equal(t, "HTTP/1.0", h.GetProtocol())
}

// Envoy's HTTP/1 codec accepts an absolute-form request target
// (http1_protocol_options.allow_absolute_url) and splits it into :authority
// and :path.
func TestAbsoluteFormTarget(t *testing.T) {
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL})
	status, _ := rawHTTP(t, p.Addr(), "GET http://db:8080/rows?id=1 HTTP/1.1\r\nHost: db:8080\r\n\r\n")
	require.Equal(t, http.StatusOK, status)
	h := f.calls()[0].GetAttributes().GetRequest().GetHttp()
	assert.Equal(t, "/rows?id=1", h.GetPath())
	assert.Equal(t, "db:8080", h.GetHost())
}

// ext_authz.proto, with_request_body: "Enables the filter to buffer the
// client request body and send it within the authorization request. The
// x-envoy-auth-partial-body: false|true metadata header will be added to
// the authorization request indicating whether the body data is partial."
// BufferSettings.max_request_bytes: "Envoy will return HTTP 413 and will not
// initiate the authorization process when the buffer reaches the size set
// in this field"; allow_partial_message: "Envoy will buffer the message
// until max_request_bytes is reached. The authorization request will be
// dispatched and no 413 HTTP error will be returned"; pack_as_bytes: the
// body goes in raw_body, otherwise in body as a string.
func TestWithRequestBody(t *testing.T) {
	const body = `{"customer":"joe@example.com","items":[1,2,3]}`
	for _, tc := range []struct {
		name        string
		settings    BufferSettings
		body        string
		wantStatus  int
		wantCalled  bool
		wantBody    string
		wantPartial string
		wantRaw     bool
	}{
		{"whole body as string", BufferSettings{MaxRequestBytes: 1024}, body, 200, true, body, "false", false},
		{"pack_as_bytes", BufferSettings{MaxRequestBytes: 1024, PackAsBytes: true}, body, 200, true, body, "false", true},
		{"exactly max_request_bytes", BufferSettings{MaxRequestBytes: len(body)}, body, 200, true, body, "false", false},
		{"too big, partial not allowed: 413", BufferSettings{MaxRequestBytes: 16}, body, 413, false, "", "", false},
		{"too big, partial allowed", BufferSettings{MaxRequestBytes: 16, AllowPartialMessage: true}, body, 200, true, body[:16], "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr := startAuthz(t, allow)
			up := startUpstream(t)
			settings := tc.settings
			p, log := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, WithRequestBody: &settings})
			resp, err := http.Post(p.URL()+"/api/v1/orders", "application/json", strings.NewReader(tc.body))
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.wantStatus, resp.StatusCode)
			calls := f.calls()
			if !tc.wantCalled {
				assert.Empty(t, calls, "the service must not be called")
				assert.Equal(t, 0, up.count(), "nothing goes upstream")
				assert.EqualValues(t, 1, p.Stats().PayloadTooLarge)
				assert.Equal(t, "payload_too_large", (*log)[0].Authz)
				return
			}
			require.Len(t, calls, 1)
			h := calls[0].GetAttributes().GetRequest().GetHttp()
			if tc.wantRaw {
				assert.Equal(t, tc.wantBody, string(h.GetRawBody()))
				assert.Empty(t, h.GetBody())
			} else {
				assert.Equal(t, tc.wantBody, h.GetBody())
				assert.Empty(t, h.GetRawBody())
			}
			assert.Equal(t, tc.wantPartial, h.GetHeaders()["x-envoy-auth-partial-body"])
			assert.Equal(t, strconv.Itoa(len(tc.body)), h.GetHeaders()["content-length"])
			r, got := up.last(t)
			assert.Equal(t, tc.body, got, "the whole body goes upstream")
			assert.Empty(t, r.Header.Get("X-Envoy-Auth-Partial-Body"), "the partial-body header is for the service only")
		})
	}
}

// The body and other string fields carry the bytes Envoy received; protobuf
// C++ does not refuse non-UTF-8 strings on the wire. attribute_context.proto:
// header values that are not UTF-8 have those characters "replaced by !".
func TestNonUTF8OnTheWire(t *testing.T) {
	h := &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/caf\xe9?q=\xff", Body: "name=caf\xe9&x=\xc3\x28",
		Headers: map[string]string{"x-legacy": sanitize("caf\xe9")},
	}
	wire, err := marshalLenient(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: h},
	}})
	require.NoError(t, err)
	got := httpStrings(t, wire)
	assert.Equal(t, "/caf\xe9?q=\xff", got[4], "path")
	assert.Equal(t, "name=caf\xe9&x=\xc3\x28", got[11], "body")
	assert.Equal(t, "POST", got[2], "method")
	assert.Equal(t, "caf!", h.Headers["x-legacy"])
}

// httpStrings walks CheckRequest.attributes.request.http occurrences on the
// wire and returns the last value of each string field, as a protobuf
// parser merging repeated embedded messages would.
func httpStrings(t *testing.T, b []byte) map[protowire.Number]string {
	t.Helper()
	out := map[protowire.Number]string{}
	var walk func(b []byte, path []protowire.Number)
	walk = func(b []byte, path []protowire.Number) {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			require.GreaterOrEqual(t, n, 0)
			b = b[n:]
			if typ != protowire.BytesType {
				n = protowire.ConsumeFieldValue(num, typ, b)
				require.GreaterOrEqual(t, n, 0)
				b = b[n:]
				continue
			}
			v, n := protowire.ConsumeBytes(b)
			require.GreaterOrEqual(t, n, 0)
			b = b[n:]
			switch {
			case len(path) == 0 && num == 1, len(path) == 1 && num == 4, len(path) == 2 && num == 2:
				walk(v, append(path, num))
			case len(path) == 3:
				out[num] = string(v)
			}
		}
	}
	walk(b, nil)
	return out
}

// external_auth.proto, OkHttpResponse: headers "append, add or override
// headers from the original request before dispatching it to the
// upstream"; append "defaults to false"; headers_to_remove, where
// "pseudo headers ... as well as the header Host, may not be removed";
// response_headers_to_add go "to the downstream client on success";
// query_parameters_to_set "set (and overwrite)" and
// query_parameters_to_remove. CheckResponse.dynamic_metadata lands under the
// filter's namespace, where the access log reads it.
func TestOKHeaderMutations(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{"meshwaf_decision": "allow"})
	require.NoError(t, err)
	f, addr := startAuthz(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, Value: v} }
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{
					{Header: hv("x-user", "joe")},                               // add
					{Header: hv("x-tenant", "blue")},                            // overwrite (append defaults to false)
					{Header: hv("x-trace", "b"), Append: wrapperspb.Bool(true)}, // append
					{Header: hv("x-once", "new"), AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT},
				},
				HeadersToRemove:         []string{"authorization", "host", ":path"},
				ResponseHeadersToAdd:    []*corev3.HeaderValueOption{{Header: hv("x-waf", "checked")}},
				QueryParametersToSet:    []*corev3.QueryParameter{{Key: "page", Value: "2"}},
				QueryParametersToRemove: []string{"debug"},
			}},
			DynamicMetadata: md,
		}, nil
	})
	up := startUpstream(t)
	p, log := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL})
	req, err := http.NewRequest(http.MethodGet, p.URL()+"/items?debug=1&page=1&sort=asc", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer secret")
	req.Header.Set("X-Tenant", "red")
	req.Header.Set("X-Trace", "a")
	req.Header.Set("X-Once", "old")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "hello from upstream", string(b))
	assert.Equal(t, "checked", resp.Header.Get("X-Waf"), "response_headers_to_add")
	assert.Equal(t, "yes", resp.Header.Get("X-Upstream"))
	require.Len(t, f.calls(), 1)

	r, _ := up.last(t)
	assert.Equal(t, "joe", r.Header.Get("X-User"))
	assert.Equal(t, "blue", r.Header.Get("X-Tenant"))
	assert.Equal(t, "a,b", r.Header.Get("X-Trace"))
	assert.Equal(t, "old", r.Header.Get("X-Once"))
	assert.Empty(t, r.Header.Get("Authorization"))
	assert.Equal(t, strings.TrimPrefix(p.URL(), "http://"), r.Host, "Host may not be removed")
	assert.Equal(t, "/items?page=2&sort=asc", r.RequestURI)

	require.Len(t, *log, 1)
	e := (*log)[0]
	assert.Equal(t, "ok", e.Authz)
	assert.Equal(t, 200, e.Status)
	assert.Equal(t, "allow", e.Metadata.GetFields()["meshwaf_decision"].GetStringValue())
	assert.EqualValues(t, 1, p.Stats().OK)
}

// external_auth.proto, CheckResponse.status: "Any other status indicates
// the request should be denied, and ... Envoy sends 403 Forbidden HTTP
// status code by default"; DeniedHttpResponse: status ("If not set, Envoy
// sends 403 Forbidden"), headers (append defaults to false: the local reply's
// header is replaced) and body. ext_authz.cc sends them as a local reply and
// sets the UAEX response flag; the upstream is not called.
func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		name       string
		denied     *authv3.DeniedHttpResponse
		wantStatus int
		wantBody   string
		wantCT     string
	}{
		{"status, headers and body", &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}}},
			Body:    `{"error":"no"}`,
		}, 429, `{"error":"no"}`, "application/json"},
		{"no status: 403", &authv3.DeniedHttpResponse{Body: "denied"}, 403, "denied", "text/plain"},
		{"no denied_response: 403", nil, 403, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startAuthz(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
				r := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}
				if tc.denied != nil {
					r.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: tc.denied}
				}
				return r, nil
			})
			up := startUpstream(t)
			p, log := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL})
			resp, err := http.Get(p.URL() + "/")
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tc.wantStatus, resp.StatusCode)
			assert.Equal(t, tc.wantBody, string(b))
			if tc.wantCT != "" {
				assert.Equal(t, tc.wantCT, resp.Header.Get("Content-Type"))
			}
			assert.Equal(t, 0, up.count(), "a denied request must not reach the upstream")
			assert.Equal(t, "UAEX", (*log)[0].ResponseFlags)
			assert.EqualValues(t, 1, p.Stats().Denied)
		})
	}
}

// ext_authz.proto: grpc_service has a "default timeout: 200ms";
// failure_mode_allow: when true "the filter will accept the client request
// even if communication with the authorization service has failed", when
// false it will "reject client requests and return Forbidden";
// status_on_error sets that status; failure_mode_allow_header_add adds
// x-envoy-auth-failure-mode-allowed: true to the request.
func TestFailure(t *testing.T) {
	slow := func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		time.Sleep(DefaultTimeout + 300*time.Millisecond)
		return allow(nil)
	}
	for _, tc := range []struct {
		name         string
		cfg          Config
		answer       func(*authv3.CheckRequest) (*authv3.CheckResponse, error)
		wantStatus   int
		wantUpstream bool
	}{
		{"timeout, default: 403", Config{}, slow, 403, false},
		{"gRPC error, status_on_error 503", Config{StatusOnError: 503}, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, errInternal
		}, 503, false},
		{"timeout, failure_mode_allow", Config{FailureModeAllow: true, FailureModeAllowHeaderAdd: true}, slow, 200, true},
		{"service down, failure_mode_allow", Config{FailureModeAllow: true, AuthzAddress: "127.0.0.1:1"}, allow, 200, true},
		{"service down, fail closed", Config{AuthzAddress: "127.0.0.1:1"}, allow, 403, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startAuthz(t, tc.answer)
			up := startUpstream(t)
			cfg := tc.cfg
			if cfg.AuthzAddress == "" {
				cfg.AuthzAddress = addr
			}
			cfg.Upstream = up.srv.URL
			p, log := startProxy(t, cfg)
			start := time.Now()
			resp, err := http.Get(p.URL() + "/")
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.wantStatus, resp.StatusCode)
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.EqualValues(t, 1, p.Stats().Error)
			require.Len(t, *log, 1)
			assert.Error(t, (*log)[0].Err)
			if !tc.wantUpstream {
				assert.Equal(t, 0, up.count())
				assert.Equal(t, "UAEX", (*log)[0].ResponseFlags)
				return
			}
			r, _ := up.last(t)
			assert.EqualValues(t, 1, p.Stats().FailureModeAllowed)
			if cfg.FailureModeAllowHeaderAdd {
				assert.Equal(t, "true", r.Header.Get("X-Envoy-Auth-Failure-Mode-Allowed"))
			} else {
				assert.Empty(t, r.Header.Get("X-Envoy-Auth-Failure-Mode-Allowed"))
			}
		})
	}
}

var errInternal = rpcErr("internal")

type rpcErr string

func (e rpcErr) Error() string { return string(e) }

// attribute_context.proto, Peer.principal: "the identity of this peer ...
// For SPIFFE, this is the URI SAN of the certificate"; check_request_utils.cc
// takes the source principal from the peer certificate's URI SAN and the
// destination principal from the local certificate's.
func TestMTLSPrincipals(t *testing.T) {
	mesh, err := NewMesh("cluster.local")
	require.NoError(t, err)
	dbCert, err := mesh.Identity("default", "db")
	require.NoError(t, err)
	wwwCert, err := mesh.Identity("default", "www")
	require.NoError(t, err)
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, TLS: mesh.ServerTLS(dbCert)})

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: mesh.ClientTLS(wwwCert)}}
	resp, err := client.Get(p.URL() + "/rows")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	attrs := f.calls()[0].GetAttributes()
	assert.Equal(t, "spiffe://cluster.local/ns/default/sa/www", attrs.GetSource().GetPrincipal())
	assert.Equal(t, "spiffe://cluster.local/ns/default/sa/db", attrs.GetDestination().GetPrincipal())
	assert.Equal(t, "https", attrs.GetRequest().GetHttp().GetScheme())

	// Without a mesh certificate there is no connection at all.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mesh.ClientTLS(wwwCert).RootCAs, MinVersion: tls.VersionTLS12}}}
	resp, err = anon.Get(p.URL() + "/rows")
	if err == nil {
		resp.Body.Close()
	}
	assert.Error(t, err, "a client without a certificate must be refused")
	assert.Len(t, f.calls(), 1)
}

// ext_authz.proto, context_extensions are passed to the service as
// attributes.context_extensions.
func TestContextExtensions(t *testing.T) {
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, ContextExtensions: map[string]string{"meshwaf-profile": "strict"}})
	resp, err := http.Get(p.URL() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "strict", f.calls()[0].GetAttributes().GetContextExtensions()["meshwaf-profile"])
}

// Requests Envoy refuses before any filter: a #fragment in the path (400;
// release notes of 1.16.5/1.17.4/1.19.1, http_reject_path_with_fragment),
// an HTTP version its HTTP/1 codec does not speak (400, a codec error), and
// HTTP/1.0 unless http_protocol_options.accept_http_10 is set (426).
func TestRefusedBeforeTheFilter(t *testing.T) {
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL})
	for _, tc := range []struct {
		raw  string
		want int
	}{
		{"GET /index.html#tag HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/4.0\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/1.0\r\nHost: a\r\n\r\n", 426},
	} {
		status, _ := rawHTTP(t, p.Addr(), tc.raw)
		assert.Equal(t, tc.want, status, "%q", tc.raw)
	}
	assert.Empty(t, f.calls(), "the service is never called")
	assert.Equal(t, 0, up.count())

	p10, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, AcceptHTTP10: true})
	status, _ := rawHTTP(t, p10.Addr(), "GET / HTTP/1.0\r\nHost: a\r\n\r\n")
	assert.Equal(t, 200, status, "accept_http_10")
}

// Envoy's HTTP/1 codec keeps transfer-encoding in the header map the
// filter sees; net/http moves it out, so the stand-in puts it back.
func TestTransferEncodingHeader(t *testing.T) {
	f, addr := startAuthz(t, allow)
	up := startUpstream(t)
	p, _ := startProxy(t, Config{AuthzAddress: addr, Upstream: up.srv.URL, WithRequestBody: &BufferSettings{MaxRequestBytes: 1024}})
	status, _ := rawHTTP(t, p.Addr(), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nHi \r\n3\r\nCRS\r\n0\r\n\r\n")
	require.Equal(t, 200, status)
	h := f.calls()[0].GetAttributes().GetRequest().GetHttp()
	assert.Equal(t, "chunked", h.GetHeaders()["transfer-encoding"])
	assert.Equal(t, "Hi CRS", h.GetBody())
	_, body := up.last(t)
	assert.Equal(t, "Hi CRS", body)
}

// A gRPC request refused by the filter gets a gRPC answer, as from Envoy's
// sendLocalReply (source/common/http/utility.cc) with is_grpc: HTTP 200,
// grpc-status from Grpc::Utility::httpToGrpcStatus, the body as
// grpc-message. Other requests keep the HTTP status.
func TestGRPCLocalReply(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		status      int
		wantHTTP    int
		wantGRPC    string
	}{
		{"application/grpc", http.StatusForbidden, http.StatusOK, "7"},
		{"application/grpc+proto", http.StatusUnauthorized, http.StatusOK, "16"},
		{"application/grpc; charset=utf-8", http.StatusServiceUnavailable, http.StatusOK, "14"},
		{"application/grpc", http.StatusBadRequest, http.StatusOK, "13"},
		{"application/grpc", http.StatusTeapot, http.StatusOK, "2"},
		{"application/grpc-web", http.StatusForbidden, http.StatusForbidden, ""},
		{"application/json", http.StatusForbidden, http.StatusForbidden, ""},
	} {
		r := httptest.NewRequest(http.MethodPost, "/pkg.Svc/Call", nil)
		r.Header.Set("Content-Type", tc.contentType)
		w := httptest.NewRecorder()
		deny(w, r, &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(tc.status)}, Body: "denied by meshwaf"})
		assert.Equal(t, tc.wantHTTP, w.Code, tc.contentType)
		assert.Equal(t, tc.wantGRPC, w.Header().Get("Grpc-Status"), tc.contentType)
		if tc.wantGRPC != "" {
			assert.Equal(t, "denied%20by%20meshwaf", w.Header().Get("Grpc-Message"))
			assert.Empty(t, w.Body.String(), "trailers only")
		}
	}
}
