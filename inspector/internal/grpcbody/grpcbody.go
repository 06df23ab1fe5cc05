// Package grpcbody is meshwaf's GRPC body processor for Coraza. Register
// installs it in Coraza's process-wide body processor registry; nothing is
// registered by importing the package.
package grpcbody

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
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
//     has more than one), and each of its fields in turn: an attack split
//     over fields is whole again in the text;
//   - without the schema a string and a message look alike, so a field that
//     parses as a message is a string too: its own text is an argument,
//     less the runs of text its fields hold whole (every run of text is
//     inspected whole, in the innermost field that holds it);
//   - no field is dropped for being binary: bytes that are not UTF-8 become
//     text, each run of other bytes one space.
//
// Text read out of bytes that are not text (binary data, or a message with
// its tags, lengths and numbers) is "<field>.raw", which only the paranoia
// level 1 rules read (RawRule).
//
// The arguments of a body hold at most 8 times its bytes (64 KiB at least);
// past that, and past SecArgumentsLimit, the rest is not added and
// ARGUMENTS_LIMIT_REACHED is set, which meshwaf's guard denies.
//
// Numbers are not arguments, and neither is a message of numbers only,
// unless its bytes read as text ("hi" parses as field 13 = 'i'). A message
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

// Name is the name of the body processor, for ctl:requestBodyProcessor.
const Name = "GRPC"

// BodyLimitVar is the TX variable a rule of the profile sets to its request
// body limit: compressed messages may not inflate past it.
const BodyLimitVar = "meshwaf_request_body_limit"

const (
	grpcMaxDepth    = 32 // nested messages walked
	grpcTextFactor  = 8  // argument bytes per byte of message, at most
	grpcMinText     = 64 << 10
	grpcMaxInflated = 4 << 20 // bytes the compressed messages of a body may inflate to, in all
)

var registerOnce sync.Once

// Register installs the processor in Coraza's body processor registry under
// Name, once per process; later calls do nothing. Call it before the rules
// that name it are parsed.
func Register() {
	registerOnce.Do(func() {
		plugins.RegisterBodyProcessor(strings.ToLower(Name), func() plugintypes.BodyProcessor {
			return grpcBody{}
		})
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
	// meshwaf's profiles put their body limit in a tx variable
	// (BodyLimitVar): compressed messages may not inflate past what the
	// profile inspects of a plain body.
	if l := v.TX().Get(BodyLimitVar); len(l) > 0 {
		if n, err := strconv.Atoi(l[0]); err == nil && n > 0 {
			d.inflateLimit = min(d.inflateLimit, n)
		}
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
			continue
		}
		// Cut short: the whole fields, then the rest, which is a string
		// when no field was whole.
		fields, rest := lenFields(f.msg)
		d.message(key, fields, 0)
		if len(fields) == 0 {
			d.str(key, rest)
		} else {
			d.addRaw(key, text(rest))
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

// value adds the arguments of b, a length-delimited field (depth > 0) or
// a whole gRPC message (depth 0) found under key, and returns its text for
// the message that holds it.
//
// Without the schema a string and a message look alike, and printable
// ASCII parses as protobuf (a space is the tag of a varint, '"' of a
// length-delimited field). So a field that parses as a message is read
// both ways: its fields are arguments, and so is its own text, as far as
// its fields do not hold it: every run of text characters in a body is
// inspected whole, in the innermost field that holds it whole. A gRPC
// message that parses is no string: only its fields are read.
func (d *grpcDecoder) value(key string, b []byte, depth int) string {
	var fields []pbField
	rest := b
	if depth < grpcMaxDepth {
		fields, rest = lenFields(b)
	}
	if len(rest) > 0 {
		return d.str(key, b)
	}
	joined, parts := d.message(key, fields, depth)
	if depth == 0 {
		return ""
	}
	if isText(b) { // a string that parses as a message
		d.add(key, string(b))
		return string(b)
	}
	if parts > 1 { // an attack split over fields is whole again
		d.add(key, joined)
	}
	d.addRaw(key, framingText(b, fields))
	return joined
}

// str adds b, a string or bytes, under key and returns its text for the
// message that holds it.
func (d *grpcDecoder) str(key string, b []byte) string {
	switch {
	case isText(b):
		d.add(key, string(b))
		return string(b)
	case utf8.Valid(b): // control characters: as JSON carries them, and as text
		d.add(key, string(b))
		d.addRaw(key, text(b))
		return string(b)
	case mostlyPrintable(b):
		t := text(b)
		d.add(key, t)
		return t
	}
	d.addRaw(key, text(b)) // binary: the text in it
	return ""
}

// grpcRawSuffix ends the name of an argument that holds text read out of
// bytes that are not text: binary data, or a message (or a string that
// parses as one) with its tags, lengths and numbers. RawRule keeps the
// rules of paranoia level 2 and above off these arguments: they count
// characters such as '*' (the tag of field 5) and '%' (a length of 37),
// which ordinary messages hold. The level 1 rules, which look for attacks,
// read them.
const grpcRawSuffix = ".raw"

// RawRule returns the SecLang of the rule, with the given id, that keeps
// the rules of paranoia level 2 and above off the ".raw" arguments (see
// grpcRawSuffix). Load it before the CRS rules of phase 2. It acts only
// when this processor read the body, so the ".raw" names are its own; a
// query argument of that name turns it off: nothing a caller sends can take
// an argument away from a rule.
func RawRule(id int) string {
	return `SecRule REQBODY_PROCESSOR "@streq grpc" "id:` + strconv.Itoa(id) + `,phase:2,pass,nolog,t:none,t:lowercase,chain"
SecRule &ARGS_GET:/\.raw$/ "@eq 0" "t:none,ctl:ruleRemoveTargetByTag=paranoia-level/2;ARGS:/^grpc(?:_\d+)?(?:\.\d+(?:_\d+)?)*\.raw$/,ctl:ruleRemoveTargetByTag=paranoia-level/3;ARGS:/^grpc(?:_\d+)?(?:\.\d+(?:_\d+)?)*\.raw$/,ctl:ruleRemoveTargetByTag=paranoia-level/4;ARGS:/^grpc(?:_\d+)?(?:\.\d+(?:_\d+)?)*\.raw$/"
`
}

// addRaw adds t, text read out of bytes that are not text, under key's
// raw name, unless it is blank.
func (d *grpcDecoder) addRaw(key, t string) {
	if strings.TrimSpace(t) != "" {
		d.add(key+grpcRawSuffix, t)
	}
}

// pbField is a length-delimited protobuf field: its value v starts at
// offset off of the message.
type pbField struct {
	num protowire.Number
	off int
	v   []byte
}

// lenFields parses b as a protobuf message and returns its length-delimited
// fields, up to the first that is not whole, and the rest of b from that
// field's tag on. All of b is a message (rest is empty) when its tags have
// field numbers in range, there are no groups and every value is whole.
func lenFields(b []byte) (fields []pbField, rest []byte) {
	off := 0
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 || typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return fields, b[off:]
		}
		var m int
		if typ == protowire.BytesType {
			var v []byte
			v, m = protowire.ConsumeBytes(b[off+n:])
			if m >= 0 {
				fields = append(fields, pbField{num, off + n + m - len(v), v})
			}
		} else {
			m = protowire.ConsumeFieldValue(num, typ, b[off+n:])
		}
		if m < 0 {
			return fields, b[off:]
		}
		off += n + m
	}
	return fields, nil
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

// mostlyPrintable reports whether at least 3 in 4 bytes of b are
// printable ASCII other than the space.
func mostlyPrintable(b []byte) bool {
	n := 0
	for _, c := range b {
		if c > 0x20 && c < 0x7f || c == '\t' || c == '\n' || c == '\r' {
			n++
		}
	}
	return n > 0 && 4*n >= 3*len(b)
}

// text is b as CRS reads it: text characters (printable ASCII, tab, CR,
// LF and UTF-8 above U+009F) as they are, and every run of other bytes
// (control characters and bytes that are not UTF-8: binary data, or the
// tags, lengths and numbers of a message) as one space, none at either
// end. Nothing is dropped for being binary: text between such bytes stays
// whole, and a run of them is a word break.
func text(b []byte) string {
	return string(appendRuns(make([]byte, 0, len(b)), b, true, nil))
}

// framingText is the text of message b, with tab, CR and LF read as other
// bytes (they are also the tags of field 1 and lengths), without the runs
// of text that lie wholly inside one of its fields: those are inspected with the field.
// What is left touches tags, lengths or numbers: a string whose bytes also
// parse as a message, or text glued to a field by the bytes in front of
// it.
func framingText(b []byte, fields []pbField) string {
	i := 0
	return string(appendRuns(nil, b, false, func(start, end int) bool {
		for i < len(fields) && fields[i].off+len(fields[i].v) <= start {
			i++
		}
		return i == len(fields) || start < fields[i].off || end > fields[i].off+len(fields[i].v)
	}))
}

// appendRuns appends to out the runs of text characters in b (see text;
// tab, CR and LF only when blanks is set) that keep accepts (nil: all), a
// space between two.
func appendRuns(out, b []byte, blanks bool, keep func(start, end int) bool) []byte {
	start := -1
	flush := func(end int) {
		if start >= 0 && (keep == nil || keep(start, end)) {
			if len(out) > 0 {
				out = append(out, ' ')
			}
			out = append(out, b[start:end]...)
		}
		start = -1
	}
	for i := 0; i < len(b); {
		r, n := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(b[i:])
		}
		if r >= 0x20 && r < 0x7f || blanks && (r == '\t' || r == '\n' || r == '\r') || r > 0x9f && (r != utf8.RuneError || n > 1) {
			if start < 0 {
				start = i
			}
		} else {
			flush(i)
		}
		i += n
	}
	flush(len(b))
	return out
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
