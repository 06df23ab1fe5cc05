package checkreq

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

func TestMethodIsTheServiceDescriptors(t *testing.T) {
	require.Equal(t, "/"+authv3.Authorization_ServiceDesc.ServiceName+"/Check", Method)
}

func TestCodec(t *testing.T) {
	req := HTTP{Method: "GET", Path: "/", Authority: "db:8080"}.CheckRequest()
	wire, err := proto.Marshal(req)
	require.NoError(t, err)

	raw := Raw("\x0a\x03\xff\xfe\xfd") // any bytes go out unchanged
	bs, err := Codec{}.Marshal(raw)
	require.NoError(t, err)
	require.Equal(t, []byte(raw), bs.Materialize())

	bs, err = Codec{}.Marshal(req)
	require.NoError(t, err)
	var sent authv3.CheckRequest
	require.NoError(t, proto.Unmarshal(bs.Materialize(), &sent))
	require.True(t, proto.Equal(req, &sent), "a message is marshalled")
	_, err = Codec{}.Marshal("not a message")
	require.Error(t, err)

	var back authv3.CheckRequest
	require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &back))
	require.True(t, proto.Equal(req, &back))
	require.Error(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, new(int)))
}

func TestHTTPCheckRequest(t *testing.T) {
	in := map[string]string{"accept": "*/*", ":authority": "other:80"}
	got := HTTP{
		StreamID: "7", Method: "POST", Path: "/a?b=1", Authority: "db:8080", Protocol: "HTTP/2", Headers: in, Body: "xy",
		Source: Peer("10.0.0.5", 41234, "spiffe://td/ns/a/sa/b"), ContextExtensions: map[string]string{"k": "v"},
	}.CheckRequest()
	h := got.GetAttributes().GetRequest().GetHttp()
	require.Equal(t, map[string]string{":authority": "other:80", ":method": "POST", ":path": "/a?b=1", ":scheme": "http", "accept": "*/*"},
		h.GetHeaders(), "a pseudo-header given in Headers wins")
	require.Equal(t, map[string]string{"accept": "*/*", ":authority": "other:80"}, in, "Headers is not changed")
	require.Equal(t, "7", h.GetId())
	require.Empty(t, h.GetHost())
	require.EqualValues(t, 2, h.GetSize())
	require.Equal(t, "xy", h.GetBody())
	require.Equal(t, "HTTP/2", h.GetProtocol())
	require.Equal(t, "v", got.GetAttributes().GetContextExtensions()["k"])
	src := got.GetAttributes().GetSource()
	require.Equal(t, "spiffe://td/ns/a/sa/b", src.GetPrincipal())
	require.EqualValues(t, 41234, src.GetAddress().GetSocketAddress().GetPortValue())
	require.Equal(t, "10.0.0.5", src.GetAddress().GetSocketAddress().GetAddress())
}
