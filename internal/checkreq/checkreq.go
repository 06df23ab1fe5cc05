// Package checkreq builds Envoy ext_authz CheckRequests and sends them to
// meshwaf as Envoy does, for the code that talks to the built binary over
// the network: the e2e tests, their fake Envoy and the load benchmarks. It
// knows nothing of meshwaf's packages.
package checkreq

import (
	"context"
	"fmt"
	"maps"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Method is the full gRPC method name of Authorization/Check.
const Method = "/envoy.service.auth.v3.Authorization/Check"

// Raw is a CheckRequest already encoded; Codec sends it byte for byte.
type Raw []byte

// Codec is gRPC's "proto" codec on the client side, except that it sends a
// Raw message as it is. It lets a caller encode once and send many times,
// or send string fields holding invalid UTF-8, which protobuf-go refuses to
// marshal (Envoy's C++ protobuf sends them).
type Codec struct{}

// Name is "proto": the server sees an ordinary proto call.
func (Codec) Name() string { return "proto" }

// Marshal sends a Raw message as it is and marshals a proto.Message.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(Raw); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("checkreq: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

// Unmarshal decodes into a proto.Message.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("checkreq: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}

// Invoke calls Authorization/Check on conn with an encoded CheckRequest.
func Invoke(ctx context.Context, conn grpc.ClientConnInterface, raw Raw, opts ...grpc.CallOption) (*authv3.CheckResponse, error) {
	resp := new(authv3.CheckResponse)
	err := conn.Invoke(ctx, Method, raw, resp, append(opts, grpc.ForceCodecV2(Codec{}))...)
	return resp, err
}

// Peer is a source or destination as Envoy describes it: socket address
// and, under mTLS, the SPIFFE principal.
func Peer(addr string, port uint32, principal string) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       addr,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		Principal: principal,
	}
}

// HTTP is an HTTP request as Envoy's HTTP ext_authz filter describes it
// with with_request_body: lower-case header names, the pseudo-headers in
// the header map, the body as a string.
type HTTP struct {
	StreamID  string // attributes.request.http.id: Envoy's stream id
	Method    string
	Path      string // with the raw query
	Authority string // :authority
	Host      string // attributes.request.http.host; "" leaves it empty
	Protocol  string
	// Headers are the request's headers; the caller sets x-request-id,
	// content-length and x-envoy-auth-partial-body as the request needs.
	// A pseudo-header here replaces the one made from the fields above.
	Headers     map[string]string
	Body        string
	Source      *authv3.AttributeContext_Peer
	Destination *authv3.AttributeContext_Peer
	// ContextExtensions are the route's context_extensions.
	ContextExtensions map[string]string
}

// CheckRequest returns the CheckRequest Envoy sends for h. Headers is
// copied, not retained.
func (h HTTP) CheckRequest() *authv3.CheckRequest {
	headers := map[string]string{":authority": h.Authority, ":method": h.Method, ":path": h.Path, ":scheme": "http"}
	maps.Copy(headers, h.Headers)
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      h.Source,
		Destination: h.Destination,
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       h.StreamID,
			Method:   h.Method,
			Headers:  headers,
			Path:     h.Path,
			Host:     h.Host,
			Scheme:   "http",
			Protocol: h.Protocol,
			Size:     int64(len(h.Body)),
			Body:     h.Body,
		}},
		ContextExtensions: h.ContextExtensions,
	}}
}
