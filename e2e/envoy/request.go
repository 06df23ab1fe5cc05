package envoy

// The CheckRequest a Proxy sends, built as Envoy builds it, and the call.

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshwaf/meshwaf/internal/checkreq"
)

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

// check calls Authorization/Check. Envoy's C++ protobuf sends string fields
// (body, path, host) with the bytes it received, UTF-8 or not; protobuf-go
// refuses to marshal such strings, so the wire form is patched.
func (p *Proxy) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	wire, err := marshalLenient(req)
	if err != nil {
		return nil, err
	}
	resp, err := checkreq.Invoke(ctx, p.conn, wire)
	if err != nil {
		return nil, err
	}
	return resp, nil
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
