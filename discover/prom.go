package discover

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/common/model"
)

// The Istio standard metrics discover reads.
const (
	MetricRequests    = "istio_requests_total"
	MetricConnections = "istio_tcp_connections_opened_total"
)

// flowLabels are the labels flows are grouped by.
var flowLabels = []string{
	"source_workload", "source_workload_namespace", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_service_name", "destination_service_namespace",
	"connection_security_policy",
}

// FlowKey is one (source, destination) pair as Istio's labels name it.
type FlowKey struct {
	SourceWorkload, SourceNamespace, SourcePrincipal string
	DestWorkload, DestNamespace, DestPrincipal       string
	// DestService and DestServiceNamespace are destination_service_name
	// and destination_service_namespace ("" or "unknown" when absent).
	DestService, DestServiceNamespace string
	// Security is connection_security_policy: mutual_tls, none, unknown.
	Security string
}

// Flow is what Prometheus observed for one FlowKey over the lookback.
type Flow struct {
	FlowKey
	// Requests and Connections are increase() over the lookback, rounded.
	Requests, Connections int64
	// First and Last are the ends of the first and last step (Query.Step)
	// in which a counter increased; zero when none did.
	First, Last time.Time
}

// Query says what to ask Prometheus.
type Query struct {
	// At is the evaluation time (the end of the lookback).
	At       time.Time
	Lookback time.Duration
	// Step is the resolution of first and last seen.
	Step time.Duration
	// Timeout bounds each query, on the client and on the server.
	Timeout time.Duration
	// Address is Prometheus's base URL (http://host:9090), also named in
	// errors.
	Address string
}

// DefaultStep is the first/last-seen resolution for a lookback: an hour
// for a week; never below a minute.
func DefaultStep(lookback time.Duration) time.Duration {
	s := (lookback / 168).Truncate(time.Minute)
	if s < time.Minute {
		s = time.Minute
	}
	return s
}

// PromQL returns the three queries of metric: the count over the lookback,
// and the first and last step in which it increased. The first/last queries
// are subqueries at Step resolution aggregated on the server, so Prometheus
// returns one sample per flow, not a range.
func (q Query) PromQL(metric string) (count, first, last string) {
	by := strings.Join(flowLabels, ", ")
	sel := metric + `{reporter="destination"}`
	count = fmt.Sprintf("sum by (%s) (increase(%s[%s]))", by, sel, model.Duration(q.Lookback))
	inc := fmt.Sprintf("timestamp(sum by (%s) (increase(%s[%s])) > 0)", by, sel, model.Duration(q.Step))
	sub := fmt.Sprintf("[%s:%s]", model.Duration(q.Lookback), model.Duration(q.Step))
	first = "min_over_time((" + inc + ")" + sub + ")"
	last = "max_over_time((" + inc + ")" + sub + ")"
	return count, first, last
}

// ErrNoFlows: Prometheus holds no series of either metric in the lookback.
var ErrNoFlows = errors.New("no flows")

// ReadFlows asks Prometheus at q.Address for both metrics through hc. A query that times out, fails or
// comes back with warnings (a partial answer) is an error; so is an answer
// with no flows at all (ErrNoFlows): discover never writes an empty graph
// from a Prometheus that saw nothing.
func ReadFlows(ctx context.Context, hc *http.Client, q Query) ([]Flow, error) {
	// The six queries run two at a time (each answer of a large mesh is a
	// sample per flow: decoding more at once costs memory, not time). Each
	// answer is read as a stream into compact samples, merged once it is
	// complete and then dropped (sums, minima and maxima do not depend on
	// the order). The first error cancels the
	// queries still running or waiting, so a Prometheus that does not
	// answer fails discover within about one --timeout, and that error is
	// the one returned.
	byKey := map[FlowKey]*Flow{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, metric := range []string{MetricRequests, MetricConnections} {
		count, first, last := q.PromQL(metric)
		for i, expr := range []string{count, first, last} {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err // a sibling failed: do not start
				}
				vec, err := instant(gctx, hc, q, expr)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				merge(byKey, metric, i, vec)
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(byKey) == 0 {
		return nil, fmt.Errorf("%w: Prometheus at %s holds no %s or %s series with reporter=\"destination\" in the %s before %s; is it scraping the sidecars?",
			ErrNoFlows, q.Address, MetricRequests, MetricConnections, model.Duration(q.Lookback), q.At.UTC().Format(time.RFC3339))
	}
	out := make([]Flow, 0, len(byKey))
	for _, f := range byKey {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].less(out[j].FlowKey) })
	return out, nil
}

// merge adds the i-th query (count, first, last) of metric into byKey.
func merge(byKey map[FlowKey]*Flow, metric string, i int, vec []sample) {
	for _, s := range vec {
		k := s.key
		f := byKey[k]
		if f == nil {
			f = &Flow{FlowKey: k}
			byKey[k] = f
		}
		v := float64(s.value)
		switch i {
		case 0:
			n := int64(math.Round(v))
			if metric == MetricRequests {
				f.Requests += n
			} else {
				f.Connections += n
			}
		case 1:
			if t := secs(v); f.First.IsZero() || t.Before(f.First) {
				f.First = t
			}
		case 2:
			if t := secs(v); t.After(f.Last) {
				f.Last = t
			}
		}
	}
}

func secs(v float64) time.Time { return time.Unix(0, int64(v*1e9)).UTC() }

// instant runs one instant query. The answer (a sample per flow, 40 MB of
// JSON in a mesh of 100,000 flows) is decoded as it arrives, each sample
// into a FlowKey whose strings are shared with the answer's other samples.
func instant(ctx context.Context, hc *http.Client, q Query, expr string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, q.Timeout)
	defer cancel()
	vec, warnings, err := query(ctx, hc, q, expr)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("prometheus at %s did not answer within %s (--timeout): %s", q.Address, q.Timeout, expr)
	case err != nil:
		var perr *apiError
		if errors.As(err, &perr) && perr.Type == "timeout" {
			return nil, fmt.Errorf("prometheus at %s gave up on the query after %s (--timeout): %s", q.Address, q.Timeout, expr)
		}
		return nil, fmt.Errorf("prometheus at %s: %w (query %s)", q.Address, err, expr)
	case len(warnings) > 0:
		return nil, fmt.Errorf("prometheus at %s answered partially (warnings: %s); refusing to build a graph from part of the flows (query %s)",
			q.Address, strings.Join(warnings, "; "), expr)
	}
	return vec, nil
}

// sample is one sample of an answer.
type sample struct {
	key   FlowKey
	value float64
}

// apiError is an answer with status "error".
type apiError struct{ Type, Msg string }

func (e *apiError) Error() string { return e.Type + ": " + e.Msg }

// query posts expr to /api/v1/query and decodes the vector it answers.
func query(ctx context.Context, hc *http.Client, q Query, expr string) ([]sample, []string, error) {
	u, err := url.JoinPath(q.Address, "/api/v1/query")
	if err != nil {
		return nil, nil, err
	}
	form := url.Values{
		"query":   {expr},
		"time":    {strconv.FormatFloat(float64(q.At.UnixNano())/1e9, 'f', -1, 64)},
		"timeout": {strconv.FormatFloat(q.Timeout.Seconds(), 'f', -1, 64)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	a, err := decodeAnswer(bufio.NewReaderSize(resp.Body, 64<<10))
	if err != nil {
		if resp.StatusCode/100 != 2 {
			return nil, nil, fmt.Errorf("HTTP %s", resp.Status)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the answer ended early
		}
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case a.status == "error":
		return nil, nil, &apiError{Type: a.errorType, Msg: a.errorMsg}
	case resp.StatusCode/100 != 2:
		return nil, nil, fmt.Errorf("HTTP %s", resp.Status)
	case a.status != "success":
		return nil, nil, fmt.Errorf("answer with status %q", a.status)
	case a.resultType != "vector":
		return nil, nil, fmt.Errorf("answered %s, want a vector", a.resultType)
	}
	return a.samples, a.warnings, nil
}

// answer is what decodeAnswer read of an /api/v1/query response.
type answer struct {
	status, errorType, errorMsg, resultType string
	warnings                                []string
	samples                                 []sample
}

// flowMetric is the metric of a sample of the queries of PromQL (grouped
// by flowLabels; other labels are ignored).
type flowMetric struct {
	SourceWorkload       string `json:"source_workload"`
	SourceNamespace      string `json:"source_workload_namespace"`
	SourcePrincipal      string `json:"source_principal"`
	DestWorkload         string `json:"destination_workload"`
	DestNamespace        string `json:"destination_workload_namespace"`
	DestPrincipal        string `json:"destination_principal"`
	DestService          string `json:"destination_service_name"`
	DestServiceNamespace string `json:"destination_service_namespace"`
	Security             string `json:"connection_security_policy"`
}

// promValue is a sample's [timestamp, "value"].
type promValue float64

func (v *promValue) UnmarshalJSON(b []byte) error {
	var pair [2]json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	var s string
	if err := json.Unmarshal(pair[1], &s); err != nil {
		return fmt.Errorf("sample value %s: %w", pair[1], err)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("sample value %q: %w", s, err)
	}
	*v = promValue(f)
	return nil
}

// decodeAnswer reads a response token by token and data.result one
// sample at a time.
func decodeAnswer(r io.Reader) (*answer, error) {
	dec := json.NewDecoder(r)
	a := &answer{}
	strs := map[string]string{}
	intern := func(s string) string {
		if s == "unknown" {
			return ""
		}
		if v, ok := strs[s]; ok {
			return v
		}
		strs[s] = s
		return s
	}
	err := object(dec, func(key string) error {
		switch key {
		case "status":
			return dec.Decode(&a.status)
		case "errorType":
			return dec.Decode(&a.errorType)
		case "error":
			return dec.Decode(&a.errorMsg)
		case "warnings":
			return dec.Decode(&a.warnings)
		case "data":
			return object(dec, func(key string) error {
				switch key {
				case "resultType":
					return dec.Decode(&a.resultType)
				case "result":
					return array(dec, func() error {
						var s struct {
							Metric flowMetric `json:"metric"`
							Value  promValue  `json:"value"`
						}
						if err := dec.Decode(&s); err != nil {
							return err
						}
						m := s.Metric
						a.samples = append(a.samples, sample{value: float64(s.Value), key: FlowKey{
							SourceWorkload: intern(m.SourceWorkload), SourceNamespace: intern(m.SourceNamespace), SourcePrincipal: intern(trimSpiffe(m.SourcePrincipal)),
							DestWorkload: intern(m.DestWorkload), DestNamespace: intern(m.DestNamespace), DestPrincipal: intern(trimSpiffe(m.DestPrincipal)),
							DestService: intern(m.DestService), DestServiceNamespace: intern(m.DestServiceNamespace),
							Security: m.Security,
						}})
						return nil
					})
				}
				return skip(dec)
			})
		}
		return skip(dec)
	})
	return a, err
}

// object reads a JSON object, calling field for each key with the decoder
// before its value; field must read the value.
func object(dec *json.Decoder, field func(key string) error) error {
	if err := delim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if err := field(t.(string)); err != nil {
			return err
		}
	}
	return delim(dec, '}')
}

// array reads a JSON array, calling elem for each element.
func array(dec *json.Decoder, elem func() error) error {
	if err := delim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	return delim(dec, ']')
}

func delim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %s, got %v", want, t)
	}
	return nil
}

// skip reads one value of any kind.
func skip(dec *json.Decoder) error {
	var v json.RawMessage
	return dec.Decode(&v)
}

func trimSpiffe(p string) string { return strings.TrimPrefix(p, "spiffe://") }

func (k FlowKey) less(o FlowKey) bool {
	a := []string{k.SourceNamespace, k.SourceWorkload, k.SourcePrincipal, k.DestNamespace, k.DestWorkload, k.DestServiceNamespace, k.DestService, k.DestPrincipal, k.Security}
	b := []string{o.SourceNamespace, o.SourceWorkload, o.SourcePrincipal, o.DestNamespace, o.DestWorkload, o.DestServiceNamespace, o.DestService, o.DestPrincipal, o.Security}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// MTLS reports whether the source called over Istio mutual TLS with a
// principal: only such sources can be admitted by a principal.
func (k FlowKey) MTLS() bool { return k.SourcePrincipal != "" && k.Security == "mutual_tls" }
