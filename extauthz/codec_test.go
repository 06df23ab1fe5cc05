package extauthz

import (
	"bytes"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// invalidUTF8Wire marshals fixture with placeholders, then swaps them for
// same-length invalid UTF-8, as Envoy sends header values and bodies byte
// for byte.
func invalidUTF8Wire(t testing.TB) []byte {
	t.Helper()
	cr := loadCheckRequest(t, "http2.json")
	h := cr.GetAttributes().GetRequest().GetHttp()
	h.Headers["x-bin"] = "PLACEHOLDER1"
	h.Body = "PLACEHOLDER2"
	cr.Attributes.ContextExtensions = map[string]string{"k": "PLACEHOLDER3"}
	wire, err := proto.Marshal(cr)
	require.NoError(t, err)
	replace := func(old, new string) {
		t.Helper()
		require.Len(t, new, len(old), "the replacement must keep the wire lengths")
		require.Equal(t, 1, bytes.Count(wire, []byte(old)))
		wire = bytes.Replace(wire, []byte(old), []byte(new), 1)
	}
	replace("PLACEHOLDER1", "caf\xe9\xff\xfe'OR 1=")
	replace("PLACEHOLDER2", "\xc3\x28\xa0\xa1body!!!!")
	replace("PLACEHOLDER3", "\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b")
	return wire
}

func TestLenientCodecInvalidUTF8(t *testing.T) {
	wire := invalidUTF8Wire(t)
	require.Error(t, proto.Unmarshal(wire, &authv3.CheckRequest{}), "protobuf-go refuses invalid UTF-8; the codec exists for this")

	retries := 0
	c := newLenientCodec(func() { retries++ })
	var got authv3.CheckRequest
	require.NoError(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got))
	require.Equal(t, 1, retries)

	h := got.GetAttributes().GetRequest().GetHttp()
	require.Equal(t, "caf\xe9\xff\xfe'OR 1=", h.GetHeaders()["x-bin"])
	require.Equal(t, "\xc3\x28\xa0\xa1body!!!!", h.GetBody())
	require.Equal(t, "\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b", got.GetAttributes().GetContextExtensions()["k"])
	// Everything else decodes as usual.
	require.Equal(t, "POST", h.GetMethod())
	require.Equal(t, "/v1/login", h.GetPath())
	require.EqualValues(t, 27, h.GetSize())
	require.Equal(t, "auth:8080", h.GetHeaders()[":authority"])
	require.EqualValues(t, 8080, got.GetAttributes().GetDestination().GetAddress().GetSocketAddress().GetPortValue())
}

func TestLenientCodecValidInputUnchanged(t *testing.T) {
	for _, f := range []string{"http11.json", "http2.json", "header_map.json", "raw_body.json", "tcp.json"} {
		cr := loadCheckRequest(t, f)
		wire, err := proto.Marshal(cr)
		require.NoError(t, err)
		var viaCodec authv3.CheckRequest
		retries := 0
		require.NoError(t, newLenientCodec(func() { retries++ }).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &viaCodec))
		require.Zero(t, retries, f)
		require.True(t, proto.Equal(cr, &viaCodec), f)
		// The lenient decoder alone gives the same message.
		var lenient authv3.CheckRequest
		require.NoError(t, unmarshalLenient(wire, lenient.ProtoReflect(), 0), f)
		require.True(t, proto.Equal(cr, &lenient), f)
	}
}

func TestLenientCodecMalformed(t *testing.T) {
	wire := invalidUTF8Wire(t)
	for _, bad := range [][]byte{wire[:len(wire)-3], {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, {0xff}} {
		var got authv3.CheckRequest
		require.Error(t, newLenientCodec(nil).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &got))
	}
}

func FuzzLenientDecode(f *testing.F) {
	f.Add(invalidUTF8Wire(f))
	for _, name := range []string{"http11.json", "header_map.json", "tcp.json"} {
		wire, err := proto.Marshal(loadCheckRequest(f, name))
		require.NoError(f, err)
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var strict, lenient authv3.CheckRequest
		strictErr := proto.Unmarshal(wire, &strict)
		lenientErr := unmarshalLenient(wire, lenient.ProtoReflect(), 0)
		if strictErr == nil {
			// Where protobuf-go accepts the input, the lenient decoder must
			// agree with it exactly.
			require.NoError(t, lenientErr)
			require.True(t, proto.Equal(&strict, &lenient))
		}
	})
}
