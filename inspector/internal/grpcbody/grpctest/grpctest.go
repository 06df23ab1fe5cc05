// Package grpctest builds gRPC request bodies for tests: protobuf fields
// encoded without a schema, and the length-prefixed frames that carry them.
package grpctest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// String is a length-delimited protobuf field.
func String(num protowire.Number, v string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// Varint is a varint protobuf field.
func Varint(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// Message joins encoded fields into a message.
func Message(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

// Frame is one length-prefixed gRPC message with the given flag byte (1:
// compressed).
func Frame(flag byte, msg []byte) []byte {
	b := []byte{flag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// Gzip compresses b with gzip.
func Gzip(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// IsMessage reports whether all of b parses as a protobuf message: tags
// with field numbers in range, no groups, every value whole (the test the
// GRPC body processor applies before it reads bytes as a message).
func IsMessage(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
	}
	return true
}

// Deep nests a message with leaf s and a sibling "x" depth times: every
// level has two fields, so every level's text is an argument.
func Deep(depth int, s string) []byte {
	m := Message(String(1, "x"), String(2, s))
	for range depth - 1 {
		m = Message(String(1, string(m)), String(2, "x"))
	}
	return m
}
