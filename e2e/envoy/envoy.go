// Package envoy is test support: a stand-in for an Envoy sidecar running the
// envoy.filters.http.ext_authz HTTP filter with a gRPC authorization service.
// No Envoy binary can be had on the machines that run meshwaf's tests, so
// the end-to-end suite puts this in front of the real meshwaf binary.
//
// For each downstream request, a Proxy does what Envoy's filter does
// (source/extensions/filters/http/ext_authz/ext_authz.cc and
// source/extensions/filters/common/ext_authz/check_request_utils.cc in
// envoyproxy/envoy; the API reference of ext_authz.proto,
// external_auth.proto and attribute_context.proto on envoyproxy.io):
//
//   - it builds the CheckRequest: header keys lower-cased, repeated headers
//     merged with commas, the pseudo-headers :authority, :method, :path and
//     :scheme (HTTP/1's Host becomes :authority), path = the raw request
//     target with its query, id = the stream id, the protocol string, the
//     source and destination addresses and, under mTLS, principals taken
//     from the URI SAN of the peer and local certificates;
//   - with_request_body: it buffers up to max_request_bytes, answers 413
//     itself when the body is larger and allow_partial_message is off, sends
//     the body as body (string) or raw_body (pack_as_bytes) and adds the
//     x-envoy-auth-partial-body header to the CheckRequest;
//   - it calls Check with the gRPC timeout (Envoy's default 200 ms);
//   - OK: applies the OkHttpResponse header mutations and query parameter
//     changes, forwards to the upstream and adds response_headers_to_add;
//     Denied: answers with the denied status (403 when unset), headers and
//     body; error or timeout: failure_mode_allow or status_on_error (403
//     when unset).
//
// Like Envoy's connection manager it adds x-request-id when the request has
// none and x-forwarded-proto. It does not normalize paths (Envoy's
// normalize_path defaults to off). It is an HTTP/1.1 server built on
// net/http, so requests that Go's parser rejects get a 400 from the proxy,
// as malformed requests do from Envoy's codec.
package envoy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultTimeout is Envoy's default timeout of the gRPC authorization call.
const DefaultTimeout = 200 * time.Millisecond

// MetadataNamespace is where Envoy stores the CheckResponse's dynamic
// metadata: the filter's name.
const MetadataNamespace = "envoy.filters.http.ext_authz"

// BufferSettings is the filter's with_request_body.
type BufferSettings struct {
	MaxRequestBytes     int
	AllowPartialMessage bool
	PackAsBytes         bool
}

// Config is the part of an Envoy configuration the stand-in follows.
type Config struct {
	// AuthzAddress is the gRPC address of the authorization service.
	AuthzAddress string
	// Upstream is the base URL of the local service (http://host:port).
	Upstream string
	// Timeout of the Check call; 0 means DefaultTimeout.
	Timeout time.Duration
	// WithRequestBody, when set, buffers the body and sends it.
	WithRequestBody *BufferSettings
	// FailureModeAllow lets requests through when the call fails.
	FailureModeAllow bool
	// FailureModeAllowHeaderAdd adds x-envoy-auth-failure-mode-allowed: true
	// to such requests.
	FailureModeAllowHeaderAdd bool
	// StatusOnError is the status when the call fails; 0 means 403.
	StatusOnError int
	// ContextExtensions are sent as attributes.context_extensions.
	ContextExtensions map[string]string
	// TLS, when set, makes the listener require client certificates (the
	// mesh's mTLS): the principals of the CheckRequest come from the URI
	// SAN of the client's certificate and of TLS.Certificates[0].
	TLS *tls.Config
	// AcceptHTTP10 is the connection manager's
	// http_protocol_options.accept_http_10: off by default, when Envoy
	// answers HTTP/1.0 requests with 426 Upgrade Required.
	AcceptHTTP10 bool
	// AccessLog, when set, receives one entry per downstream request.
	AccessLog func(Entry)
	// HTTP2 makes the listener accept HTTP/2 without TLS too (prior
	// knowledge, as a sidecar's inbound listener takes gRPC) and the
	// upstream cluster speak HTTP/2 (http2_protocol_options), as gRPC
	// needs.
	HTTP2 bool
}

// Entry is one access log line: what Envoy's access log can print with
// %DOWNSTREAM_REMOTE_ADDRESS%, %REQ(...)%, %RESPONSE_CODE%,
// %RESPONSE_FLAGS% and %DYNAMIC_METADATA(envoy.filters.http.ext_authz)%.
type Entry struct {
	Start         time.Time
	Duration      time.Duration
	RemoteAddress string
	Method        string
	Path          string
	Authority     string
	RequestID     string
	Status        int
	// Authz is ok, denied, error, failure_mode_allowed, payload_too_large
	// or "" when the filter did not call the service.
	Authz string
	// ResponseFlags is UAEX when the filter refused the request.
	ResponseFlags string
	// Metadata is the dynamic metadata the service returned, or nil.
	Metadata *structpb.Struct
	// Err is the call's error when Authz is error or failure_mode_allowed.
	Err error
}

// Stats are the filter's counters (Envoy: http.<prefix>.ext_authz.*).
type Stats struct {
	OK, Denied, Error, FailureModeAllowed int64
	// PayloadTooLarge counts 413s sent by the filter itself.
	PayloadTooLarge int64
	// Upstream counts requests forwarded to the upstream.
	Upstream int64
}

// Proxy is one running stand-in sidecar.
type Proxy struct {
	cfg      Config
	lis      net.Listener
	srv      *http.Server
	conn     *grpc.ClientConn
	client   *http.Client
	upstream *url.URL
	localTLS string // principal of the local certificate

	ok, denied, errs, fmAllowed, tooLarge, forwarded atomic.Int64
}

// Start listens on 127.0.0.1 and serves until Close.
func Start(cfg Config) (*Proxy, error) {
	up, err := url.Parse(cfg.Upstream)
	if err != nil || up.Host == "" {
		return nil, fmt.Errorf("envoy: upstream %q is not a URL", cfg.Upstream)
	}
	conn, err := grpc.NewClient(cfg.AuthzAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("envoy: authz client: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		conn:     conn,
		upstream: up,
		client: &http.Client{
			Transport: upstreamTransport(cfg.HTTP2),
			Timeout:   30 * time.Second,
			// Envoy's router does not follow redirects by default.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		if len(tc.Certificates) > 0 && tc.Certificates[0].Leaf != nil {
			p.localTLS = principal(tc.Certificates[0].Leaf)
		}
		p.lis = tls.NewListener(lis, tc) // (no 505 rewriting under TLS)
	} else {
		p.lis = codecListener{lis}
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*codecConn); ok {
				return context.WithValue(ctx, connKey{}, cc)
			}
			return ctx
		},
	}
	if cfg.HTTP2 {
		p.srv.Protocols = new(http.Protocols)
		p.srv.Protocols.SetHTTP1(true)
		p.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() { _ = p.srv.Serve(p.lis) }()
	return p, nil
}

func upstreamTransport(http2 bool) *http.Transport {
	t := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	if http2 {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// Addr is the listener's address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// URL is the base URL of the listener.
func (p *Proxy) URL() string {
	if p.cfg.TLS != nil {
		return "https://" + p.Addr()
	}
	return "http://" + p.Addr()
}

// Close stops the listener and the authorization client.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	p.client.CloseIdleConnections()
	return errors.Join(err, p.conn.Close())
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	return Stats{
		OK: p.ok.Load(), Denied: p.denied.Load(), Error: p.errs.Load(),
		FailureModeAllowed: p.fmAllowed.Load(), PayloadTooLarge: p.tooLarge.Load(),
		Upstream: p.forwarded.Load(),
	}
}

// principal is what Envoy takes as a peer's principal: the first URI SAN,
// else the subject.
func principal(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// codecListener wraps accepted connections in codecConn.
type codecListener struct{ net.Listener }

func (l codecListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &codecConn{Conn: c}, nil
}

type connKey struct{}

// codecConn turns net/http's own "505 HTTP Version Not Supported", sent
// before any handler runs, into the 400 that Envoy's HTTP/1 codec sends for
// every request it cannot parse.
type codecConn struct {
	net.Conn
	served atomic.Bool
}

var status505 = []byte("HTTP/1.1 505 ")

func (c *codecConn) Write(b []byte) (int, error) {
	if i := bytes.Index(b, []byte("\r\n")); i > 0 && !c.served.Load() && bytes.HasPrefix(b, status505) {
		out := append([]byte("HTTP/1.1 400 Bad Request"), b[i:]...)
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// statusWriter records the status sent downstream.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ServeHTTP runs the filter for one request.
func (p *Proxy) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	e := Entry{Start: time.Now(), RemoteAddress: r.RemoteAddr, Method: r.Method}
	if cc, ok := r.Context().Value(connKey{}).(*codecConn); ok {
		cc.served.Store(true)
	}
	w := &statusWriter{ResponseWriter: rw}
	defer func() {
		e.Duration = time.Since(e.Start)
		e.Status = w.status
		if p.cfg.AccessLog != nil {
			p.cfg.AccessLog(e)
		}
	}()

	// The codec and the connection manager refuse some requests before any
	// filter runs.
	if strings.Contains(r.RequestURI, "#") {
		// Envoy 1.16.5/1.17.4/1.19.1 release notes: "reject requests with
		// #fragment in the URI path" (http_reject_path_with_fragment).
		e.Authz = ""
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 && !p.cfg.AcceptHTTP10 {
		w.WriteHeader(http.StatusUpgradeRequired)
		return
	}

	// The connection manager: request id and forwarded proto.
	if r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", newUUID())
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if r.Header.Get("X-Forwarded-Proto") == "" {
		r.Header.Set("X-Forwarded-Proto", scheme)
	}
	path, authority := requestTarget(r)
	e.Path, e.Authority, e.RequestID = path, authority, r.Header.Get("X-Request-Id")

	// with_request_body.
	var body []byte
	partial := false
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	bs := p.cfg.WithRequestBody
	if bs != nil && hasBody {
		if !bs.AllowPartialMessage && r.ContentLength > int64(bs.MaxRequestBytes) {
			p.payloadTooLarge(w, &e)
			return
		}
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, int64(bs.MaxRequestBytes)+1))
		if err != nil {
			http.Error(w, "downstream read error", http.StatusBadRequest)
			return
		}
		if len(body) > bs.MaxRequestBytes {
			if !bs.AllowPartialMessage {
				p.payloadTooLarge(w, &e)
				return
			}
			partial = true
		}
	}

	req := p.checkRequest(r, path, authority, scheme, body, partial)
	timeout := p.cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	resp, err := p.check(ctx, req)
	cancel()
	if err != nil {
		e.Err = err
		p.errs.Add(1)
		if p.cfg.FailureModeAllow {
			p.fmAllowed.Add(1)
			e.Authz = "failure_mode_allowed"
			if p.cfg.FailureModeAllowHeaderAdd {
				r.Header.Set("X-Envoy-Auth-Failure-Mode-Allowed", "true")
			}
			p.forward(w, r, path, body, nil)
			return
		}
		e.Authz, e.ResponseFlags = "error", "UAEX"
		status := p.cfg.StatusOnError
		if status == 0 {
			status = http.StatusForbidden
		}
		if isGRPC(r) {
			grpcLocalReply(w, status, "")
			return
		}
		w.WriteHeader(status)
		return
	}
	e.Metadata = resp.GetDynamicMetadata()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		p.denied.Add(1)
		e.Authz, e.ResponseFlags = "denied", "UAEX"
		deny(w, r, resp.GetDeniedResponse())
		return
	}
	p.ok.Add(1)
	e.Authz = "ok"
	ok := resp.GetOkResponse()
	if md := ok.GetDynamicMetadata(); md != nil { //nolint:staticcheck // Envoy still honours the deprecated field
		// The deprecated field overrides CheckResponse.dynamic_metadata.
		e.Metadata = md
	}
	path = applyOK(r, path, ok)
	p.forward(w, r, path, body, ok.GetResponseHeadersToAdd())
}

func (p *Proxy) payloadTooLarge(w http.ResponseWriter, e *Entry) {
	p.tooLarge.Add(1)
	e.Authz = "payload_too_large"
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = io.WriteString(w, "Payload Too Large")
}

// requestTarget returns :path and :authority. An absolute-form target is
// split into both, as Envoy's HTTP/1 codec does.
func requestTarget(r *http.Request) (path, authority string) {
	path, authority = r.RequestURI, r.Host
	if i := strings.Index(path, "://"); i > 0 && !strings.HasPrefix(path, "/") && r.Method != http.MethodConnect {
		rest := path[i+3:]
		j := strings.IndexAny(rest, "/?")
		if j < 0 {
			return "/", rest
		}
		path, authority = rest[j:], rest[:j]
		if strings.HasPrefix(path, "?") {
			path = "/" + path
		}
	}
	return path, authority
}

// protocolString is Envoy's name of the downstream protocol.
func protocolString(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	default:
		return "HTTP/1.1"
	}
}

// sanitize replaces what is not UTF-8 by '!', as Envoy does for header
// values in the CheckRequest.
func sanitize(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n <= 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func (p *Proxy) checkRequest(r *http.Request, path, authority, scheme string, body []byte, partial bool) *authv3.CheckRequest {
	headers := make(map[string]string, len(r.Header)+5)
	for k, vs := range r.Header {
		headers[strings.ToLower(k)] = sanitize(strings.Join(vs, ","))
	}
	if len(r.TransferEncoding) > 0 {
		// net/http takes Transfer-Encoding out of the header map; Envoy's
		// HTTP/1 codec leaves it in.
		headers["transfer-encoding"] = strings.Join(r.TransferEncoding, ",")
	}
	headers[":authority"] = sanitize(authority)
	headers[":method"] = sanitize(r.Method)
	headers[":path"] = sanitize(path)
	headers[":scheme"] = scheme
	var streamID [8]byte
	_, _ = rand.Read(streamID[:])
	h := &authv3.AttributeContext_HttpRequest{
		Id:       strconv.FormatUint(binary.BigEndian.Uint64(streamID[:]), 10),
		Method:   r.Method,
		Headers:  headers,
		Path:     path,
		Host:     authority,
		Scheme:   scheme,
		Protocol: protocolString(r),
		Size:     int64(len(body)),
	}
	if p.cfg.WithRequestBody != nil && body != nil {
		if len(body) > p.cfg.WithRequestBody.MaxRequestBytes {
			body = body[:p.cfg.WithRequestBody.MaxRequestBytes]
		}
		headers["x-envoy-auth-partial-body"] = strconv.FormatBool(partial)
		if p.cfg.WithRequestBody.PackAsBytes {
			h.RawBody = body
		} else {
			h.Body = string(body)
		}
	}
	src := &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)}
	dst := &authv3.AttributeContext_Peer{Address: socketAddress(p.lis.Addr().String())}
	if r.TLS != nil {
		if len(r.TLS.PeerCertificates) > 0 {
			src.Principal = principal(r.TLS.PeerCertificates[0])
		}
		dst.Principal = p.localTLS
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            src,
		Destination:       dst,
		Request:           &authv3.AttributeContext_Request{Http: h},
		ContextExtensions: p.cfg.ContextExtensions,
	}}
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

// check calls Authorization/Check. Envoy's C++ protobuf sends string fields
// (body, path, host) with the bytes it received, UTF-8 or not; protobuf-go
// refuses to marshal such strings, so the wire form is patched.
func (p *Proxy) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	wire, err := marshalLenient(req)
	if err != nil {
		return nil, err
	}
	var resp authv3.CheckResponse
	err = p.conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", wireMessage(wire), &resp, grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// deny writes the DeniedHttpResponse as the local reply.
func deny(w http.ResponseWriter, r *http.Request, d *authv3.DeniedHttpResponse) {
	status := int(d.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusForbidden
	}
	if isGRPC(r) {
		grpcLocalReply(w, status, d.GetBody())
		return
	}
	for _, h := range d.GetHeaders() {
		// Envoy replaces a header of the local reply: append defaults to
		// false in this message.
		if h.GetAppend().GetValue() { //nolint:staticcheck // Envoy still honours the deprecated field
			w.Header().Add(h.GetHeader().GetKey(), headerValue(h.GetHeader()))
		} else {
			w.Header().Set(h.GetHeader().GetKey(), headerValue(h.GetHeader()))
		}
	}
	if d.GetBody() != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, d.GetBody()) //nolint:gosec // the service's denied body, relayed as Envoy does
}

func headerValue(h *corev3.HeaderValue) string {
	if h.GetValue() != "" {
		return h.GetValue()
	}
	return string(h.GetRawValue())
}

// applyHeader applies one HeaderValueOption of an OkHttpResponse to hdr.
// append (deprecated BoolValue), when set, decides: true appends, false
// adds or overwrites; otherwise append_action decides, and its zero value
// is read as the message's documented default (append false: add or
// overwrite).
func applyHeader(hdr http.Header, o *corev3.HeaderValueOption) {
	k, v := o.GetHeader().GetKey(), headerValue(o.GetHeader())
	_, exists := hdr[http.CanonicalHeaderKey(k)]
	if o.GetAppend() != nil { //nolint:staticcheck // Envoy still honours the deprecated field
		if o.GetAppend().GetValue() && exists { //nolint:staticcheck // as above
			hdr.Set(k, hdr.Get(k)+","+v)
		} else {
			hdr.Set(k, v)
		}
		return
	}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if !exists {
			hdr.Set(k, v)
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if exists {
			hdr.Set(k, v)
		}
	default:
		hdr.Set(k, v)
	}
}

// applyOK applies the OkHttpResponse mutations to the request going
// upstream and returns the new :path.
func applyOK(r *http.Request, path string, ok *authv3.OkHttpResponse) string {
	for _, o := range ok.GetHeaders() {
		k := strings.ToLower(o.GetHeader().GetKey())
		if k == ":authority" || k == "host" {
			r.Host = headerValue(o.GetHeader())
			continue
		}
		if strings.HasPrefix(k, ":") {
			continue
		}
		applyHeader(r.Header, o)
	}
	for _, k := range ok.GetHeadersToRemove() {
		// Pseudo-headers and Host may not be removed.
		if strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") {
			continue
		}
		r.Header.Del(k)
	}
	if len(ok.GetQueryParametersToSet()) == 0 && len(ok.GetQueryParametersToRemove()) == 0 {
		return path
	}
	base, rawQuery, _ := strings.Cut(path, "?")
	q, _ := url.ParseQuery(rawQuery)
	for _, k := range ok.GetQueryParametersToRemove() {
		q.Del(k)
	}
	for _, qp := range ok.GetQueryParametersToSet() {
		q.Set(qp.GetKey(), qp.GetValue())
	}
	if len(q) == 0 {
		return base
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k) + "=" + url.QueryEscape(v))
		}
	}
	return base + "?" + b.String()
}

// forward sends the request to the upstream and copies the answer back.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, path string, buffered []byte, respHeaders []*corev3.HeaderValueOption) {
	var body io.Reader = http.NoBody
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		body = io.MultiReader(bytes.NewReader(buffered), r.Body)
	}
	// The request target goes upstream as it came (Envoy does not
	// re-encode :path).
	pathPart, query, _ := strings.Cut(path, "?")
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream.Scheme+"://"+p.upstream.Host+"/", body)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if strings.HasPrefix(pathPart, "//") {
		pathPart = "//" + p.upstream.Host + pathPart // else read as an authority
	}
	out.URL.Path, out.URL.RawPath, out.URL.Opaque, out.URL.RawQuery = "", "", pathPart, query
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	resp, err := p.client.Do(out) //nolint:gosec // the configured loopback upstream
	if err != nil {
		// Envoy: upstream connect error or reset.
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	p.forwarded.Add(1)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, o := range respHeaders {
		applyHeader(w.Header(), o)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	for k, vs := range resp.Trailer { // gRPC's status travels in trailers
		w.Header()[http.TrailerPrefix+k] = vs
	}
}

// isGRPC is Envoy's Grpc::Common::isGrpcRequestHeaders: a content type of
// application/grpc, alone or with a +suffix or parameters.
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// grpcLocalReply answers a gRPC request as Envoy's sendLocalReply does
// (source/common/http/utility.cc): HTTP 200, trailers only, grpc-status
// mapped from the HTTP status by Grpc::Utility::httpToGrpcStatus and the
// reply body as grpc-message.
func grpcLocalReply(w http.ResponseWriter, status int, body string) {
	code := codes.Unknown
	switch status {
	case http.StatusBadRequest:
		code = codes.Internal
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusForbidden:
		code = codes.PermissionDenied
	case http.StatusNotFound:
		code = codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		code = codes.Unavailable
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", strconv.Itoa(int(code)))
	if body != "" {
		w.Header().Set("Grpc-Message", url.PathEscape(body))
	}
	w.WriteHeader(http.StatusOK)
}

// newUUID returns a random (version 4) UUID, the form of Envoy's request ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// --- the wire form -----------------------------------------------------------

// wireMessage is an encoded CheckRequest; wireCodec sends it as it is.
type wireMessage []byte

type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(wireMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("envoy: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("envoy: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}

// marshalLenient marshals req. String fields that are not UTF-8 (method,
// path, host, body) go on the wire byte for byte: they are left out of the
// message and appended as a second attributes.request.http occurrence,
// which a protobuf parser merges into the first (embedded messages that
// occur twice are merged, scalar fields take the last value).
func marshalLenient(req *authv3.CheckRequest) ([]byte, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return proto.Marshal(req)
	}
	type field struct {
		num protowire.Number
		val *string
	}
	var bad []field
	for _, f := range []field{{2, &h.Method}, {4, &h.Path}, {5, &h.Host}, {11, &h.Body}} {
		if !utf8.ValidString(*f.val) {
			bad = append(bad, f)
		}
	}
	if len(bad) == 0 {
		return proto.Marshal(req)
	}
	c := proto.Clone(req).(*authv3.CheckRequest)
	ch := c.Attributes.Request.Http
	var httpMsg []byte
	for _, f := range bad {
		httpMsg = protowire.AppendTag(httpMsg, f.num, protowire.BytesType)
		httpMsg = protowire.AppendString(httpMsg, *f.val)
		switch f.num {
		case 2:
			ch.Method = ""
		case 4:
			ch.Path = ""
		case 5:
			ch.Host = ""
		case 11:
			ch.Body = ""
		}
	}
	b, err := proto.Marshal(c)
	if err != nil {
		return nil, err
	}
	// CheckRequest.attributes (1) > AttributeContext.request (4) >
	// Request.http (2).
	var reqMsg, attrs []byte
	reqMsg = protowire.AppendTag(reqMsg, 2, protowire.BytesType)
	reqMsg = protowire.AppendBytes(reqMsg, httpMsg)
	attrs = protowire.AppendTag(attrs, 4, protowire.BytesType)
	attrs = protowire.AppendBytes(attrs, reqMsg)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, attrs), nil
}
