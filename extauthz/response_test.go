package extauthz

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

func TestResponseFrom(t *testing.T) {
	matches := []inspector.Match{{ID: 942360}, {ID: 942190}, {ID: 949110}, {ID: 942190}}
	tests := []struct {
		name       string
		verdict    inspector.Verdict
		wantCode   int32
		wantStatus int // denied_response status; 0 for OK
		wantMeta   map[string]any
	}{
		{
			name:     "allow clean",
			verdict:  inspector.Verdict{Decision: inspector.Allow, Profile: "default"},
			wantCode: 0,
			wantMeta: map[string]any{MetaDecision: "allow", MetaAnomalyScore: 0.0, MetaRuleIDs: "", MetaProfile: "default"},
		},
		{
			name:     "allow with low score",
			verdict:  inspector.Verdict{Decision: inspector.Allow, AnomalyScore: 3, Profile: "default", Matches: []inspector.Match{{ID: 920350}}},
			wantMeta: map[string]any{MetaDecision: "allow", MetaAnomalyScore: 3.0, MetaRuleIDs: "920350", MetaProfile: "default"},
		},
		{
			name:       "deny",
			verdict:    inspector.Verdict{Decision: inspector.Deny, Status: 403, AnomalyScore: 13, Profile: "default", Matches: matches},
			wantCode:   7,
			wantStatus: 403,
			wantMeta:   map[string]any{MetaDecision: "deny", MetaAnomalyScore: 13.0, MetaRuleIDs: "942190,942360,949110", MetaProfile: "default"},
		},
		{
			name:       "deny with configured status",
			verdict:    inspector.Verdict{Decision: inspector.Deny, Status: 406, AnomalyScore: 5, Profile: "strict", Matches: []inspector.Match{{ID: 99001}}},
			wantCode:   7,
			wantStatus: 406,
			wantMeta:   map[string]any{MetaDecision: "deny", MetaAnomalyScore: 5.0, MetaRuleIDs: "99001", MetaProfile: "strict"},
		},
		{
			name:     "detect passes",
			verdict:  inspector.Verdict{Decision: inspector.Detect, Status: 403, AnomalyScore: 13, Profile: "watch", Matches: matches},
			wantMeta: map[string]any{MetaDecision: "detect", MetaAnomalyScore: 13.0, MetaRuleIDs: "942190,942360,949110", MetaProfile: "watch"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := responseFrom(tt.verdict, "req-1")
			require.Equal(t, tt.wantCode, resp.GetStatus().GetCode())
			require.Equal(t, tt.wantMeta, resp.GetDynamicMetadata().AsMap())
			if tt.wantStatus == 0 {
				require.NotNil(t, resp.GetOkResponse())
				require.Nil(t, resp.GetDeniedResponse())
				return
			}
			dr := resp.GetDeniedResponse()
			require.NotNil(t, dr)
			require.EqualValues(t, tt.wantStatus, dr.GetStatus().GetCode())
			var body map[string]string
			require.NoError(t, json.Unmarshal([]byte(dr.GetBody()), &body))
			require.Equal(t, map[string]string{"error": "request denied by meshwaf", "request_id": "req-1"}, body)
			require.Equal(t, "content-type", dr.GetHeaders()[0].GetHeader().GetKey())
		})
	}
}

func TestDeniedBodyDoesNotEchoOrBreak(t *testing.T) {
	// A hostile request id cannot inject JSON or invalid UTF-8 into the body.
	resp := responseFrom(inspector.Verdict{Decision: inspector.Deny, Status: 403}, "\"}<script>\xff")
	body := resp.GetDeniedResponse().GetBody()
	var parsed map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &parsed))
	require.Equal(t, "\"}<script>\uFFFD", parsed["request_id"])
	require.NotContains(t, body, "<script>", "html is escaped by encoding/json")
}

func TestFailureResponse(t *testing.T) {
	closed := failureResponse(false, 503, "default", "r")
	require.EqualValues(t, 7, closed.GetStatus().GetCode())
	require.EqualValues(t, 503, closed.GetDeniedResponse().GetStatus().GetCode())
	require.Contains(t, closed.GetDeniedResponse().GetBody(), "could not be inspected")
	require.Equal(t, "deny", closed.GetDynamicMetadata().AsMap()[MetaDecision])

	open := failureResponse(true, 503, "default", "r")
	require.EqualValues(t, 0, open.GetStatus().GetCode())
	require.NotNil(t, open.GetOkResponse())
	require.Equal(t, "allow", open.GetDynamicMetadata().AsMap()[MetaDecision])
}

func TestNetworkResponse(t *testing.T) {
	resp := networkResponse()
	require.EqualValues(t, 0, resp.GetStatus().GetCode())
	require.Nil(t, resp.GetDynamicMetadata())
}
