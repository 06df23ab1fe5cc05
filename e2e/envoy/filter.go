package envoy

// The filter for one downstream request: buffer, check, then deny or forward.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
)

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
