package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/meshwaf/meshwaf/inspector"
)

// stockWAF is plain coraza.NewWAF over the SecLang meshwaf compiles for p
// with the inspection beyond CRS off (its operator is meshwaf's).
// It must be built in a process that never calls inspector.Compile: that
// registers meshwaf's @rx in Coraza's process-global operator registry.
func stockWAF(p inspector.Profile) (coraza.WAF, error) {
	return coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(inspector.Directives(p.CRSOnly().WithDefaults())))
}

// stockInspect runs one request the way Coraza's http middleware does and
// reports whether it was interrupted.
func stockInspect(waf coraza.WAF, r *inspector.Request) (denied bool, err error) {
	tx := waf.NewTransaction()
	defer func() {
		tx.ProcessLogging()
		if cerr := tx.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	tx.ProcessConnection(r.Source.Address, r.Source.Port, r.Destination.Address, r.Destination.Port)
	tx.ProcessURI(r.URI, r.Method, r.Protocol)
	for _, h := range r.Headers {
		tx.AddRequestHeader(h.Name, h.Value)
	}
	if r.Host != "" {
		tx.SetServerName(r.Host)
	}
	if it := tx.ProcessRequestHeaders(); it != nil {
		return true, nil
	}
	if len(r.Body) > 0 {
		it, _, err := tx.WriteRequestBody(r.Body)
		if err != nil {
			return false, err
		}
		if it != nil {
			return true, nil
		}
	}
	it, err := tx.ProcessRequestBody()
	return it != nil, err
}

// stockServer is the least an ext_authz server around stock Coraza does:
// map the CheckRequest's HTTP attributes onto a transaction, answer OK or
// 403.
type stockServer struct {
	authv3.UnimplementedAuthorizationServer
	waf coraza.WAF
}

func (s *stockServer) Check(_ context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := cr.GetAttributes().GetRequest().GetHttp()
	r := inspector.Request{Method: h.GetMethod(), URI: h.GetPath(), Protocol: h.GetProtocol(), Host: h.GetHost(), Body: []byte(h.GetBody())}
	for k, v := range h.GetHeaders() {
		if !strings.HasPrefix(k, ":") {
			r.Headers = append(r.Headers, inspector.Header{Name: k, Value: v})
		}
	}
	r.Headers = append(r.Headers, inspector.Header{Name: "host", Value: h.GetHost()})
	r.Source.Address = cr.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	r.Destination.Address = cr.GetAttributes().GetDestination().GetAddress().GetSocketAddress().GetAddress()
	denied, err := stockInspect(s.waf, &r)
	if err != nil {
		return nil, fmt.Errorf("inspecting: %w", err)
	}
	if denied {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status:       &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}
