package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
)

// inspectCommand evaluates one request offline with the same compile and
// inspection as serve. denied reports a deny verdict.
func inspectCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (denied bool, err error) {
	fs := newFlagSet("inspect")
	var common commonFlags
	common.register(fs)
	method := fs.String("method", "", "HTTP method (default GET, or POST with a body)")
	rawURL := fs.String("url", "/", "request URL: http://host/path?query or /path?query (sent as given, not re-encoded)")
	var headers listFlag
	fs.Var(&headers, "H", "request `HEADER` \"Name: value\" (repeatable)")
	data := fs.String("data", "", "request body; Content-Type defaults to application/x-www-form-urlencoded as with curl")
	dataFile := fs.String("data-file", "", "read the request body from a file ('-' for stdin)")
	raw := fs.String("raw", "", "read a whole raw HTTP/1.x request from a file ('-' for stdin) instead of --method/--url/-H/--data")
	output := fs.String("o", "text", "output format: text or json")
	profile := fs.String("profile", "", "inspect with this profile of the config file (default: the default profile)")
	set, err := parseFlags(fs, args, stdout)
	if err != nil {
		return false, err
	}
	if *output != "text" && *output != "json" {
		return false, usageError{fmt.Errorf("-o %q: want text or json", *output)}
	}
	cfg, err := loadConfig(&common, set)
	if err != nil {
		return false, err
	}

	var req inspector.Request
	if *raw != "" {
		req, err = readRawRequest(*raw, stdin, cfg.DefaultProfile.WithDefaults().RequestBodyLimit)
	} else {
		var body []byte
		switch {
		case *dataFile == "-":
			body, err = io.ReadAll(stdin)
		case *dataFile != "":
			body, err = os.ReadFile(*dataFile)
		default:
			body = []byte(*data)
		}
		if err == nil {
			req, err = buildRequest(*method, *rawURL, headers.vals, body)
		}
	}
	if err != nil {
		return false, usageError{err}
	}

	c, err := compileConfig(cfg)
	if err != nil {
		return false, usageError{err}
	}
	if *profile != "" && !c.rules.Has(*profile) {
		return false, usageError{fmt.Errorf("-profile %q: no such profile (have %s)", *profile, strings.Join(c.rules.Profiles(), ", "))}
	}
	v, err := c.rules.Inspect(ctx, req, *profile)
	if err != nil {
		return false, err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(v)
	} else {
		err = printVerdict(stdout, &req, c.rules.Profile(v.Profile), v)
	}
	return v.Decision == inspector.Deny, err
}

// buildRequest assembles a request from the command-line parts, adding
// Host, Accept and User-Agent as curl does unless given.
func buildRequest(method, rawURL string, headers []string, body []byte) (inspector.Request, error) {
	req := inspector.Request{Method: method, Protocol: "HTTP/1.1", Body: body}
	if req.Method == "" {
		req.Method = http.MethodGet
		if len(body) > 0 {
			req.Method = http.MethodPost
		}
	}
	switch {
	case strings.HasPrefix(rawURL, "http://") || strings.HasPrefix(rawURL, "https://"):
		u, err := url.Parse(rawURL)
		if err != nil {
			return req, fmt.Errorf("-url: %w", err)
		}
		req.Host = u.Host
		rest := strings.TrimPrefix(strings.TrimPrefix(rawURL, u.Scheme+"://"), u.Host)
		if i := strings.IndexByte(rest, '#'); i >= 0 {
			rest = rest[:i]
		}
		if rest == "" {
			rest = "/"
		}
		req.URI = rest
	case strings.HasPrefix(rawURL, "/"):
		req.URI = rawURL
	default:
		return req, fmt.Errorf("-url %q: want http://host/path or /path", rawURL)
	}
	seen := map[string]bool{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return req, fmt.Errorf("-H %q: want \"Name: value\"", h)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if name == "host" {
			req.Host = value
			continue
		}
		seen[name] = true
		req.Headers = append(req.Headers, inspector.Header{Name: name, Value: value})
	}
	if req.Host == "" {
		req.Host = "localhost"
	}
	req.AddHostHeader(req.Host)
	for _, d := range []inspector.Header{{Name: "user-agent", Value: "meshwaf-inspect/" + version()}, {Name: "accept", Value: "*/*"}} {
		if !seen[d.Name] {
			req.Headers = append(req.Headers, d)
		}
	}
	if len(body) > 0 {
		if !seen["content-type"] {
			req.Headers = append(req.Headers, inspector.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		}
		if !seen["content-length"] {
			req.Headers = append(req.Headers, inspector.Header{Name: "content-length", Value: fmt.Sprint(len(body))})
		}
	}
	return req, nil
}

// readRawRequest parses an HTTP/1.x request; bodies longer than limit are
// cut and marked truncated, as the proxy would.
func readRawRequest(path string, stdin io.Reader, limit int) (inspector.Request, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return inspector.Request{}, err
		}
		defer f.Close()
		r = f
	}
	hr, err := http.ReadRequest(bufio.NewReader(r))
	if err != nil {
		return inspector.Request{}, fmt.Errorf("%s: not an HTTP/1.x request: %w", path, err)
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, int64(limit)+1))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return inspector.Request{}, fmt.Errorf("%s: reading body: %w", path, err)
	}
	req := inspector.Request{
		Method:   hr.Method,
		URI:      hr.RequestURI,
		Protocol: hr.Proto,
		Host:     hr.Host,
	}
	if len(body) > limit {
		body, req.BodyTruncated = body[:limit], true
	}
	req.Body = body
	names := make([]string, 0, len(hr.Header))
	for k := range hr.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range hr.Header[k] {
			req.Headers = append(req.Headers, inspector.Header{Name: strings.ToLower(k), Value: v})
		}
	}
	if hr.Host != "" {
		req.AddHostHeader(hr.Host) // net/http moved Host out of hr.Header
	}
	for _, te := range hr.TransferEncoding {
		req.Headers = append(req.Headers, inspector.Header{Name: "transfer-encoding", Value: te})
	}
	return req, nil
}

func printVerdict(w io.Writer, req *inspector.Request, p inspector.Profile, v inspector.Verdict) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "request:  %s %s (host %s)\n", req.Method, req.URI, req.Host)
	fmt.Fprintf(bw, "profile:  %s (paranoia level %d, threshold %d, %s)\n", p.Name, p.ParanoiaLevel, p.InboundAnomalyThreshold, p.Mode)
	switch v.Decision {
	case inspector.Deny:
		fmt.Fprintf(bw, "decision: deny (status %d, rule %d)\n", v.Status, v.InterruptingRule)
	case inspector.Detect:
		fmt.Fprintf(bw, "decision: detect (would be denied by rule %d; detect mode lets it pass)\n", v.InterruptingRule)
	default:
		fmt.Fprintln(bw, "decision: allow")
	}
	fmt.Fprintf(bw, "score:    %d\n", v.AnomalyScore)
	if len(v.Matches) == 0 {
		fmt.Fprintln(bw, "rules:    none matched")
	} else {
		fmt.Fprintln(bw, "rules:")
	}
	for _, m := range v.Matches {
		fmt.Fprintf(bw, "  %d  %-8s %s\n", m.ID, m.Severity, m.Msg)
		if m.Data != "" {
			fmt.Fprintf(bw, "          %s\n", m.Data)
		}
	}
	return bw.Flush()
}
