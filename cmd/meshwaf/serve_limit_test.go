package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// A named profile with a larger requestBodyLimit than the default profile
// gets its whole body through the gRPC receive limit: serve, a real gRPC
// client on loopback, a check with a body at the profile's limit.
func TestServeAdmitsLargestProfileBody(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, []string{"serve", "-config", filepath.Join("testdata", "config", "large-profile-limit.yaml"),
			"-grpc-address", "127.0.0.1:0", "-admin-address", "127.0.0.1:0"}, strings.NewReader(""), io.Discard, pw)
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
	t.Logf("serving after %s", time.Since(start))
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	require.NoError(t, err)
	defer conn.Close()
	// A gRPC call of the uploads profile's requestBodyLimit: one message
	// holding one binary field, which is no argument, so the check stays cheap.
	blob := bytes.Repeat([]byte{0xff}, 8<<20-5-1-4) // not UTF-8, not printable
	body := grpcFrame(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), blob))
	require.Len(t, body, 8<<20)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/uploads/sa/default"},
		Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "big-1", Method: "POST", Host: "uploads.example.com", Path: "/pkg.Uploads/Put", Protocol: "HTTP/2",
				Headers: map[string]string{":authority": "uploads.example.com", ":method": "POST", ":path": "/pkg.Uploads/Put",
					"content-type": "application/grpc", "te": "trailers", "user-agent": "test", "accept": "*/*"},
				RawBody: body,
			}}}}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	require.NoError(t, err, "a body at the largest profile limit must reach meshwaf")
	t.Logf("checked after %s", time.Since(start))
	require.Equal(t, "uploads", resp.GetDynamicMetadata().GetFields()["meshwaf_profile"].GetStringValue())

	cancel()
	require.Equal(t, exitOK, <-done)
}

// grpcFrame is msg as one gRPC length-prefixed message, uncompressed.
func grpcFrame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...) //nolint:gosec // test sizes
}
