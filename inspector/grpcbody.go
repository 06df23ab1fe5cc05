package inspector

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/collection"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"google.golang.org/protobuf/encoding/protowire"
)

// The GRPC body processor makes the string fields of gRPC messages ARGS,
// so that CRS inspects them as it inspects JSON or form values.
//
// Envoy hands ext_authz the body of a gRPC (or binary gRPC-web) call as
// length-prefixed messages: a flag byte (1: compressed with grpc-encoding),
// a big-endian uint32 length, the message. Messages are protobuf, decoded
// without a schema. Each length-delimited field becomes ARGS_POST
// "grpc.<field>.<field>..." (field numbers from the top message; a field
// that occurs more than once in a message gets its index, "grpc.4_0", and
// so does each message of a stream, "grpc_1.4": repeated fields are not
// parameter pollution, and names hold no character CRS counts as special):
//
//   - a string as it is;
//   - a nested message as the text of its fields joined by spaces (when it
//     has more than one), and each of its fields in turn: without the
//     schema a string and a message look alike, and an attack split over
//     fields is whole again in the text;
//   - bytes that are not UTF-8 but mostly printable with the other bytes
//     turned to spaces (other binary data is no argument).
//
// The arguments of a body hold at most 8 times its bytes (64 KiB at least);
// past that, and past SecArgumentsLimit, the rest is not added and
// ARGUMENTS_LIMIT_REACHED is set, which meshwaf's guard denies.
//
// Numbers are not arguments, and neither is a message of numbers only,
// unless it reads as plain text ("hi" parses as field 13 = 'i'). A message
// that is not protobuf (another codec, e.g. JSON over gRPC) is one argument.
//
// Like the JSON body processor, it leaves REQUEST_BODY empty: the framing
// and binary numbers are not text, and CRS's byte-range rules would flag
// every call at paranoia level 3. A message compressed with gzip is
// inflated up to the profile's request body limit (4 MiB at most, in all);
// any other encoding, a bad flag or a broken gzip stream
// is a request body error, which rule 200002 denies: what cannot be read is
// not let through unread. A message cut short by the end of the body
// (Envoy's partial body) is read as far as it goes; meshwaf's partial-body
// guard decides about the rest.

// GRPCBodyProcessor is the name of the body processor, for
// ctl:requestBodyProcessor. It is registered with Coraza when this package
// is loaded.
const GRPCBodyProcessor = "GRPC"

const (
	grpcMaxDepth    = 32 // nested messages walked
	grpcTextFactor  = 8  // argument bytes per byte of message, at most
	grpcMinText     = 64 << 10
	grpcMaxInflated = 4 << 20 // bytes the compressed messages of a body may inflate to, in all
)

func init() {
	plugins.RegisterBodyProcessor(strings.ToLower(GRPCBodyProcessor), func() plugintypes.BodyProcessor {
		return grpcBody{}
	})
}

type grpcBody struct{}

// setter is what Coraza's single-value variables implement besides
// collection.Single.
type setter interface{ Set(string) }

func (grpcBody) ProcessRequest(r io.Reader, v plugintypes.TransactionVariables, o plugintypes.BodyProcessorOptions) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	set(v.RequestBodyLength(), strconv.Itoa(len(body)))

	enc := "identity"
	if h := v.RequestHeaders().Get("grpc-encoding"); len(h) > 0 {
		enc = strings.ToLower(strings.TrimSpace(h[0]))
	}
	d := grpcDecoder{args: v.ArgsPost(), limit: o.ArgumentLimit, inflateLimit: grpcMaxInflated}
	// meshwaf's profiles put their body limit in a tx variable (rule
	// 99100): compressed messages may not inflate past what the profile
	// inspects of a plain body.
	if l, err := strconv.Atoi(first(v.TX().Get("meshwaf_request_body_limit"))); err == nil && l > 0 {
		d.inflateLimit = min(d.inflateLimit, l)
	}
	err = d.frames(body, enc)
	if d.overLimit {
		set(v.ArgumentsLimitReached(), "1")
	}
	return err
}

func (grpcBody) ProcessResponse(io.Reader, plugintypes.TransactionVariables, plugintypes.BodyProcessorOptions) error {
	return nil
}

func set(c collection.Single, value string) {
	if s, ok := c.(setter); ok {
		s.Set(value)
	}
}

// grpcDecoder adds the string fields of messages to args, up to limit
// values (0: no limit).
type grpcDecoder struct {
	args      collection.Map
	limit     int
	added     int
	overLimit bool
	// textLeft bounds the bytes of all arguments: nested texts repeat
	// their fields, so a deep message could otherwise make a small body
	// cost many times its size to inspect.
	textLeft int
	// inflateLimit bounds the bytes compressed messages inflate to, in all.
	inflateLimit int
}

func (d *grpcDecoder) frames(body []byte, enc string) error {
	size := len(body)
	type frame struct {
		msg []byte
		cut bool
	}
	var frames []frame
	inflated := 0
	for len(body) >= 5 {
		flag, n := body[0], binary.BigEndian.Uint32(body[1:5])
		body = body[5:]
		f := frame{msg: body}
		if uint64(n) <= uint64(len(body)) {
			f.msg, body = body[:n], body[n:]
		} else {
			body, f.cut = nil, true // cut short: read what there is
		}
		switch flag {
		case 0:
		case 1:
			var err error
			if f.msg, err = inflate(f.msg, enc, d.inflateLimit-inflated); err != nil {
				return err
			}
			inflated += len(f.msg)
		default:
			return fmt.Errorf("gRPC message with flag 0x%02x: not a request data frame", flag)
		}
		frames = append(frames, f)
	}
	d.textLeft = max(grpcMinText, grpcTextFactor*(size+inflated))
	for i, f := range frames {
		key := "grpc"
		if len(frames) > 1 {
			key = "grpc_" + strconv.Itoa(i)
		}
		if !f.cut {
			d.value(key, f.msg, 0)
		} else if fields, _ := lenFields(f.msg); len(fields) > 0 {
			d.message(key, fields, 0)
		} else {
			d.addText(key, f.msg)
		}
	}
	return nil
}

// inflate decompresses a message compressed with enc, to at most limit
// bytes.
func inflate(msg []byte, enc string, limit int) ([]byte, error) {
	if enc != "gzip" {
		return nil, fmt.Errorf("gRPC message compressed with %q: meshwaf reads gzip only", enc)
	}
	zr, err := gzip.NewReader(bytes.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("gRPC message: gzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("gRPC message: gzip: %w", err)
	}
	if len(out) > limit {
		return nil, errors.New("gRPC messages inflate to over the request body limit (4 MiB at most)")
	}
	return out, nil
}

// value adds the arguments of b, found under key, and returns its text.
// At depth 0 b is a whole gRPC message, whose text is not an argument.
func (d *grpcDecoder) value(key string, b []byte, depth int) string {
	if len(b) == 0 {
		return ""
	}
	if depth < grpcMaxDepth {
		if fields, whole := lenFields(b); whole {
			if len(fields) == 0 {
				// Numbers only, or a string that happens to parse
				// ("hi" is field 13 = 'i').
				if isText(b) {
					d.add(key, string(b))
					return string(b)
				}
				return ""
			}
			t, parts := d.message(key, fields, depth)
			if depth > 0 && parts > 1 { // one part: the text is that field's
				d.add(key, t)
			}
			return t
		}
	}
	if utf8.Valid(b) {
		d.add(key, string(b))
		return string(b)
	}
	return d.addText(key, b)
}

// pbField is a length-delimited protobuf field.
type pbField struct {
	num protowire.Number
	v   []byte
}

// lenFields parses b as a protobuf message and returns its length-delimited
// fields, up to the first that is not whole, and whether all of b is a
// message: tags with field numbers in range, no groups, every value whole.
func lenFields(b []byte) (fields []pbField, whole bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return fields, false
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fields, false
			}
			fields = append(fields, pbField{num, v})
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return fields, false
		}
		b = b[n:]
	}
	return fields, true
}

// message adds the arguments of a message's fields under key and returns
// their texts joined by spaces and how many texts it joined. A field that
// occurs more than once gets its index.
func (d *grpcDecoder) message(key string, fields []pbField, depth int) (text string, parts int) {
	var count, seen map[protowire.Number]int // only messages of several fields
	if len(fields) > 1 {
		count, seen = make(map[protowire.Number]int, len(fields)), make(map[protowire.Number]int)
		for _, f := range fields {
			count[f.num]++
		}
	}
	var texts []string
	for _, f := range fields {
		if d.overLimit {
			break
		}
		k := key + "." + strconv.Itoa(int(f.num))
		if count[f.num] > 1 {
			k += "_" + strconv.Itoa(seen[f.num])
			seen[f.num]++
		}
		if t := d.value(k, f.v, depth+1); t != "" {
			texts = append(texts, t)
		}
	}
	return strings.Join(texts, " "), len(texts)
}

// isText reports whether b reads as text: UTF-8 without control
// characters other than tab, CR and LF, and not only blanks.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	blank := true
	for _, c := range b {
		switch {
		case c == '\t' || c == '\n' || c == '\r' || c == ' ':
		case c < 0x20 || c == 0x7f:
			return false
		default:
			blank = false
		}
	}
	return !blank
}

// addText adds b, when it is mostly printable ASCII, with the other bytes
// turned to spaces, and returns it; other binary data is no argument.
func (d *grpcDecoder) addText(key string, b []byte) string {
	out := make([]byte, len(b))
	printable := 0
	for i, c := range b {
		if c >= 0x20 && c < 0x7f || c == '\t' || c == '\n' || c == '\r' {
			out[i] = c
			if c != ' ' {
				printable++
			}
		} else {
			out[i] = ' '
		}
	}
	if printable == 0 || 4*printable < 3*len(b) {
		return ""
	}
	t := string(out)
	d.add(key, t)
	return t
}

func (d *grpcDecoder) add(key, value string) {
	if d.limit > 0 && d.added >= d.limit || len(value) > d.textLeft {
		d.overLimit = true
		return
	}
	d.args.Add(key, value)
	d.added++
	d.textLeft -= len(value)
}
