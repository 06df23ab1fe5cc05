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
	"crypto/tls"
	"time"

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
