package discover

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
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
	// Address names Prometheus in errors.
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

// ReadFlows asks api for both metrics. A query that times out, fails or
// comes back with warnings (a partial answer) is an error; so is an answer
// with no flows at all (ErrNoFlows): discover never writes an empty graph
// from a Prometheus that saw nothing.
func ReadFlows(ctx context.Context, api promv1.API, q Query) ([]Flow, error) {
	// The six queries run two at a time (each answer of a large mesh is a
	// sample per flow: decoding more at once costs memory, not time). Each
	// answer is merged as it arrives and then dropped (sums, minima and
	// maxima do not depend on the order). The first error cancels the
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
				vec, err := instant(gctx, api, q, expr)
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
func merge(byKey map[FlowKey]*Flow, metric string, i int, vec model.Vector) {
	for _, s := range vec {
		k := keyOf(s.Metric)
		f := byKey[k]
		if f == nil {
			f = &Flow{FlowKey: k}
			byKey[k] = f
		}
		v := float64(s.Value)
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

func instant(ctx context.Context, api promv1.API, q Query, expr string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, q.Timeout)
	defer cancel()
	v, warnings, _, err := api.Query(ctx, expr, q.At, promv1.WithTimeout(q.Timeout))
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("prometheus at %s did not answer within %s (--timeout): %s", q.Address, q.Timeout, expr)
	case err != nil:
		var perr *promv1.Error
		if errors.As(err, &perr) && perr.Type == promv1.ErrTimeout {
			return nil, fmt.Errorf("prometheus at %s gave up on the query after %s (--timeout): %s", q.Address, q.Timeout, expr)
		}
		return nil, fmt.Errorf("prometheus at %s: %w (query %s)", q.Address, err, expr)
	case len(warnings) > 0:
		return nil, fmt.Errorf("prometheus at %s answered partially (warnings: %s); refusing to build a graph from part of the flows (query %s)",
			q.Address, strings.Join(warnings, "; "), expr)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("prometheus at %s answered %s, want a vector (query %s)", q.Address, v.Type(), expr)
	}
	return vec, nil
}

func keyOf(m model.Metric) FlowKey {
	l := func(name string) string {
		v := string(m[model.LabelName(name)])
		if v == "unknown" {
			return ""
		}
		return v
	}
	return FlowKey{
		SourceWorkload: l("source_workload"), SourceNamespace: l("source_workload_namespace"), SourcePrincipal: trimSpiffe(l("source_principal")),
		DestWorkload: l("destination_workload"), DestNamespace: l("destination_workload_namespace"), DestPrincipal: trimSpiffe(l("destination_principal")),
		DestService: l("destination_service_name"), DestServiceNamespace: l("destination_service_namespace"),
		Security: string(m["connection_security_policy"]),
	}
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
