package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// grpcCheck is a CheckRequest as Envoy sends it for a unary gRPC call with
// pack_as_bytes: HTTP/2, the message framed in raw_body.
func grpcCheck(t *testing.T, id string, msg proto.Message, gzipped bool) *authv3.CheckRequest {
	t.Helper()
	b, err := proto.Marshal(msg)
	require.NoError(t, err)
	flag := byte(0)
	if gzipped {
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		_, err := zw.Write(b)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		b, flag = out.Bytes(), 1
	}
	frame := append([]byte{flag, 0, 0, 0, 0}, b...)
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(b)))
	headers := map[string]string{
		"content-type":              "application/grpc",
		"te":                        "trailers",
		"user-agent":                "grpc-go/1.78.0",
		"grpc-timeout":              "995m",
		"content-length":            fmt.Sprint(len(frame)),
		"x-envoy-auth-partial-body": "false",
	}
	if gzipped {
		headers["grpc-encoding"] = "gzip"
		headers["grpc-accept-encoding"] = "gzip"
	}
	req := httpCheck{
		streamID: id, requestID: "grpc-" + id, method: http.MethodPost,
		path: "/orders.v1.Orders/Create", host: "orders.shop.svc.cluster.local:9090",
		protocol: "HTTP/2", headers: headers,
	}.request()
	req.Attributes.Request.Http.Size = int64(len(frame))
	req.Attributes.Request.Http.RawBody = frame
	return req
}

// TestGRPCMessagesInspected sends gRPC calls whose messages are real
// protobuf (google.protobuf.Struct: maps of nested messages, as grpc-go
// encodes them) to the real binary: the fields of ordinary orders pass,
// an injection in a nested field is denied, compressed or not.
func TestGRPCMessagesInspected(t *testing.T) {
	p := startServer(t)
	order := func(note string) *structpb.Struct {
		s, err := structpb.NewStruct(map[string]any{
			"customer": "Ada Lovelace",
			"items":    []any{map[string]any{"sku": "A-1001", "qty": 2}, map[string]any{"sku": "B-2002", "qty": 1}},
			"delivery": map[string]any{"address": "12 St James's Square, London", "note": note},
		})
		require.NoError(t, err)
		return s
	}
	for i, tc := range []struct {
		name    string
		msg     proto.Message
		gzipped bool
		want    string
		rules   []string
	}{
		{name: "order", msg: order("leave at the door"), want: "allow"},
		{name: "order gzip", msg: order("ring twice, then wait"), gzipped: true, want: "allow"},
		{name: "sqli in a nested field", msg: order("1' UNION SELECT password FROM users--"), want: "deny", rules: []string{"942100"}},
		{name: "rce in a nested field, gzip", msg: order("; cat /etc/passwd"), gzipped: true, want: "deny", rules: []string{"930120"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := p.check(t, grpcCheck(t, fmt.Sprint(i+1), tc.msg, tc.gzipped))
			v := verdictOf(t, resp)
			require.Equal(t, tc.want, v.decision, "rules %s, score %v", v.ruleIDs, v.score)
			for _, r := range tc.rules {
				require.Contains(t, strings.Split(v.ruleIDs, ","), r)
			}
			if tc.want == "allow" {
				require.Zero(t, v.score, "rules %s", v.ruleIDs)
			}
		})
	}
}
