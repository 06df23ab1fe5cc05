package envoy

// The CheckResponse applied as Envoy applies it: denials and OK mutations.

import (
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// deny writes the DeniedHttpResponse as the local reply.
func deny(w http.ResponseWriter, r *http.Request, d *authv3.DeniedHttpResponse) {
	status := int(d.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusForbidden
	}
	if isGRPC(r) {
		grpcLocalReply(w, status, d.GetBody())
		return
	}
	for _, h := range d.GetHeaders() {
		// Envoy replaces a header of the local reply: append defaults to
		// false in this message.
		if h.GetAppend().GetValue() { //nolint:staticcheck // Envoy still honours the deprecated field
			w.Header().Add(h.GetHeader().GetKey(), headerValue(h.GetHeader()))
		} else {
			w.Header().Set(h.GetHeader().GetKey(), headerValue(h.GetHeader()))
		}
	}
	if d.GetBody() != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, d.GetBody()) //nolint:gosec // the service's denied body, relayed as Envoy does
}

func headerValue(h *corev3.HeaderValue) string {
	if h.GetValue() != "" {
		return h.GetValue()
	}
	return string(h.GetRawValue())
}

// applyHeader applies one HeaderValueOption of an OkHttpResponse to hdr.
// append (deprecated BoolValue), when set, decides: true appends, false
// adds or overwrites; otherwise append_action decides, and its zero value
// is read as the message's documented default (append false: add or
// overwrite).
func applyHeader(hdr http.Header, o *corev3.HeaderValueOption) {
	k, v := o.GetHeader().GetKey(), headerValue(o.GetHeader())
	_, exists := hdr[http.CanonicalHeaderKey(k)]
	if o.GetAppend() != nil { //nolint:staticcheck // Envoy still honours the deprecated field
		if o.GetAppend().GetValue() && exists { //nolint:staticcheck // as above
			hdr.Set(k, hdr.Get(k)+","+v)
		} else {
			hdr.Set(k, v)
		}
		return
	}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if !exists {
			hdr.Set(k, v)
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if exists {
			hdr.Set(k, v)
		}
	default:
		hdr.Set(k, v)
	}
}

// applyOK applies the OkHttpResponse mutations to the request going
// upstream and returns the new :path.
func applyOK(r *http.Request, path string, ok *authv3.OkHttpResponse) string {
	for _, o := range ok.GetHeaders() {
		k := strings.ToLower(o.GetHeader().GetKey())
		if k == ":authority" || k == "host" {
			r.Host = headerValue(o.GetHeader())
			continue
		}
		if strings.HasPrefix(k, ":") {
			continue
		}
		applyHeader(r.Header, o)
	}
	for _, k := range ok.GetHeadersToRemove() {
		// Pseudo-headers and Host may not be removed.
		if strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") {
			continue
		}
		r.Header.Del(k)
	}
	if len(ok.GetQueryParametersToSet()) == 0 && len(ok.GetQueryParametersToRemove()) == 0 {
		return path
	}
	base, rawQuery, _ := strings.Cut(path, "?")
	q, _ := url.ParseQuery(rawQuery)
	for _, k := range ok.GetQueryParametersToRemove() {
		q.Del(k)
	}
	for _, qp := range ok.GetQueryParametersToSet() {
		q.Set(qp.GetKey(), qp.GetValue())
	}
	if len(q) == 0 {
		return base
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k) + "=" + url.QueryEscape(v))
		}
	}
	return base + "?" + b.String()
}
