package extauthz

import (
	"encoding/json"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshwaf/meshwaf/inspector"
)

// Keys of the dynamic metadata set on every HTTP check.
const (
	MetaDecision     = "meshwaf_decision"
	MetaAnomalyScore = "meshwaf_anomaly_score"
	MetaRuleIDs      = "meshwaf_rule_ids"
	MetaProfile      = "meshwaf_profile"
)

// deniedBody is the JSON body of a denial. It never echoes the request.
type deniedBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

// responseFrom maps a verdict onto a CheckResponse: OK for allow and detect,
// a denied_response with the verdict's status and a small JSON body for
// deny. Dynamic metadata is always set. It is a pure function.
func responseFrom(v inspector.Verdict, requestID string) *authv3.CheckResponse {
	meta := metadata(v.Decision, v.AnomalyScore, v.RuleIDs(), v.Profile)
	if v.Decision != inspector.Deny {
		return okResponse(meta)
	}
	return deniedResponse(meta, v.Status, "request denied by meshwaf", requestID)
}

// failureResponse answers a check that could not be inspected: OK when
// failing open, otherwise a denial with status st. Its metadata says allow
// or deny with no score and no rules.
func failureResponse(failOpen bool, st int, profile, requestID string) *authv3.CheckResponse {
	if failOpen {
		return okResponse(metadata(inspector.Allow, 0, nil, profile))
	}
	return deniedResponse(metadata(inspector.Deny, 0, nil, profile), st, "request could not be inspected", requestID)
}

func okResponse(meta *structpb.Struct) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &status.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		DynamicMetadata: meta,
	}
}

// deniedResponse is a denial with HTTP status st (DefaultDenyStatus when 0)
// and a JSON body saying msg.
func deniedResponse(meta *structpb.Struct, st int, msg, requestID string) *authv3.CheckResponse {
	if st == 0 {
		st = inspector.DefaultDenyStatus
	}
	return &authv3.CheckResponse{
		Status:          &status.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: "denied by meshwaf"},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied(st, msg, requestID)},
		DynamicMetadata: meta,
	}
}

// networkResponse answers a CheckRequest without an HTTP request (the
// network ext_authz filter): always OK, with no metadata.
func networkResponse() *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_OK)}}
}

func denied(st int, msg, requestID string) *authv3.DeniedHttpResponse {
	// json.Marshal replaces invalid UTF-8, so the body is always valid.
	body, _ := json.Marshal(deniedBody{Error: msg, RequestID: requestID})
	return &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(st)},
		Headers: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		Body: string(body),
	}
}

func metadata(d inspector.Decision, score int, ruleIDs []int, profile string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		MetaDecision:     structpb.NewStringValue(string(d)),
		MetaAnomalyScore: structpb.NewNumberValue(float64(score)),
		MetaRuleIDs:      structpb.NewStringValue(joinIDs(ruleIDs)),
		MetaProfile:      structpb.NewStringValue(strings.ToValidUTF8(profile, "\uFFFD")),
	}}
}

func joinIDs(ids []int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(id))
	}
	return b.String()
}
