package extauthz

import (
	"errors"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// lenientCodec is gRPC's proto codec, except that a CheckRequest whose
// string fields hold invalid UTF-8 (Envoy copies header values and bodies
// byte for byte; protobuf-go refuses them) is still decoded, with the bytes
// kept as they are, so the check gets a verdict instead of a gRPC error.
type lenientCodec struct {
	base    encoding.CodecV2
	onRetry func()
}

func newLenientCodec(onRetry func()) encoding.CodecV2 {
	return lenientCodec{base: encoding.GetCodecV2(grpcproto.Name), onRetry: onRetry}
}

func (c lenientCodec) Name() string { return c.base.Name() }

func (c lenientCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	cr, ok := v.(*authv3.CheckRequest)
	if err == nil || !ok {
		return err
	}
	buf := data.Materialize()
	proto.Reset(cr)
	if lerr := unmarshalLenient(buf, cr.ProtoReflect(), 0); lerr != nil {
		proto.Reset(cr)
		return err
	}
	if c.onRetry != nil {
		c.onRetry()
	}
	return nil
}

// maxLenientDepth bounds recursion on hostile input.
const maxLenientDepth = 64

var errMalformed = errors.New("malformed protobuf")

// unmarshalLenient decodes b into m like proto.Unmarshal, but sets string
// fields without UTF-8 validation. Fields other than strings and messages
// are decoded by proto.Unmarshal, one field at a time, merged into m.
func unmarshalLenient(b []byte, m protoreflect.Message, depth int) error {
	if depth > maxLenientDepth {
		return fmt.Errorf("%w: nesting too deep", errMalformed)
	}
	fields := m.Descriptor().Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w at %s", errMalformed, m.Descriptor().FullName())
		}
		vlen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vlen < 0 {
			return fmt.Errorf("%w at %s", errMalformed, m.Descriptor().FullName())
		}
		field := b[:n+vlen]
		val := b[n : n+vlen]
		b = b[n+vlen:]

		fd := fields.ByNumber(num)
		if fd == nil || typ != protowire.BytesType || (fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.MessageKind) {
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(field, m.Interface()); err != nil {
				return err
			}
			continue
		}
		payload, _ := protowire.ConsumeBytes(val)
		switch {
		case fd.IsMap():
			if err := mapEntryLenient(payload, m.Mutable(fd).Map(), fd, depth); err != nil {
				return err
			}
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			m.Mutable(fd).List().Append(protoreflect.ValueOfString(string(payload)))
		case fd.IsList():
			l := m.Mutable(fd).List()
			e := l.NewElement()
			if err := unmarshalLenient(payload, e.Message(), depth+1); err != nil {
				return err
			}
			l.Append(e)
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(string(payload)))
		default:
			if err := unmarshalLenient(payload, m.Mutable(fd).Message(), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func mapEntryLenient(b []byte, mp protoreflect.Map, fd protoreflect.FieldDescriptor, depth int) error {
	kd, vd := fd.MapKey(), fd.MapValue()
	key := kd.Default().MapKey()
	var val protoreflect.Value
	if vd.Kind() == protoreflect.MessageKind {
		val = mp.NewValue()
	} else {
		val = vd.Default()
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w in map entry", errMalformed)
		}
		b = b[n:]
		var d protoreflect.FieldDescriptor
		switch num {
		case 1:
			d = kd
		case 2:
			d = vd
		default:
			vlen := protowire.ConsumeFieldValue(num, typ, b)
			if vlen < 0 {
				return fmt.Errorf("%w in map entry", errMalformed)
			}
			b = b[vlen:]
			continue
		}
		v, vlen, err := scalarOrMessage(d, typ, b, val, depth)
		if err != nil {
			return err
		}
		b = b[vlen:]
		if num == 1 {
			key = v.MapKey()
		} else {
			val = v
		}
	}
	mp.Set(key, val)
	return nil
}

// scalarOrMessage decodes one map key or value; only the kinds that a map
// can hold in the Envoy API are handled (strings, integers, bools, messages).
func scalarOrMessage(d protoreflect.FieldDescriptor, typ protowire.Type, b []byte, msgVal protoreflect.Value, depth int) (protoreflect.Value, int, error) {
	switch d.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		if typ != protowire.BytesType {
			return protoreflect.Value{}, 0, errMalformed
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protoreflect.Value{}, 0, errMalformed
		}
		if d.Kind() == protoreflect.BytesKind {
			return protoreflect.ValueOfBytes(append([]byte(nil), v...)), n, nil
		}
		return protoreflect.ValueOfString(string(v)), n, nil
	case protoreflect.MessageKind:
		if typ != protowire.BytesType {
			return protoreflect.Value{}, 0, errMalformed
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protoreflect.Value{}, 0, errMalformed
		}
		if err := unmarshalLenient(v, msgVal.Message(), depth+1); err != nil {
			return protoreflect.Value{}, 0, err
		}
		return msgVal, n, nil
	case protoreflect.BoolKind, protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		if typ != protowire.VarintType {
			return protoreflect.Value{}, 0, errMalformed
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return protoreflect.Value{}, 0, errMalformed
		}
		switch d.Kind() {
		case protoreflect.BoolKind:
			return protoreflect.ValueOfBool(v != 0), n, nil
		case protoreflect.Int32Kind:
			return protoreflect.ValueOfInt32(int32(v)), n, nil
		case protoreflect.Int64Kind:
			return protoreflect.ValueOfInt64(int64(v)), n, nil
		case protoreflect.Uint32Kind:
			return protoreflect.ValueOfUint32(uint32(v)), n, nil
		default:
			return protoreflect.ValueOfUint64(v), n, nil
		}
	}
	return protoreflect.Value{}, 0, fmt.Errorf("%w: unsupported map kind %v", errMalformed, d.Kind())
}
