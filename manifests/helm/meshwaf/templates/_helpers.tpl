{{/* Labels on every object: the same two `meshwaf manifests` sets, no Helm labels, so the objects are identical. */}}
{{- define "meshwaf.labels" -}}
app.kubernetes.io/managed-by: meshwaf
app.kubernetes.io/name: {{ .Values.serviceName }}
{{- end }}

{{- define "meshwaf.selector" -}}
app.kubernetes.io/name: {{ .Values.serviceName }}
{{- end }}

{{/* central: the modes that run meshwaf's own Deployment and Service. */}}
{{- define "meshwaf.central" -}}
{{- if has .Values.mode (list "mesh" "envoyfilter" "waypoint") }}true{{ end }}
{{- end }}

{{/* imageTag is the tag of .Values.image ("latest" without one). */}}
{{- define "meshwaf.imageTag" -}}
{{- $name := regexReplaceAll "@.*$" .Values.image "" -}}
{{- $last := regexReplaceAll "^.*/" $name "" -}}
{{- if contains ":" $last }}{{ regexReplaceAll "^.*:" $last "" }}{{ else }}latest{{ end }}
{{- end }}

{{/* serviceHost is the FQDN of meshwaf's Service. */}}
{{- define "meshwaf.serviceHost" -}}
{{ .Values.serviceName }}.{{ .Values.namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* timeout is timeoutMilliseconds as a protobuf JSON Duration (0.500s, 1s). */}}
{{- define "meshwaf.timeout" -}}
{{- $ms := int .Values.timeoutMilliseconds -}}
{{- if eq (mod $ms 1000) 0 }}{{ div $ms 1000 }}s{{ else }}{{ printf "%d.%03ds" (div $ms 1000) (mod $ms 1000) }}{{ end }}
{{- end }}

{{/* notPaths rule of the CUSTOM policies. */}}
{{- define "meshwaf.rules" -}}
rules:
{{- if .Values.excludePaths }}
- to:
  - operation:
      notPaths:
{{ toYaml .Values.excludePaths | indent 6 }}
{{- else }}
- {}
{{- end }}
{{- end }}

{{- define "meshwaf.checks" -}}
{{- if gt (int .Values.maxRequestBytes) (int .Values.config.defaultProfile.requestBodyLimit) }}
{{- fail (printf "maxRequestBytes %v: above config.defaultProfile.requestBodyLimit %v, so meshwaf would inspect only part of what Envoy sends" .Values.maxRequestBytes .Values.config.defaultProfile.requestBodyLimit) }}
{{- end }}
{{- if lt (int .Values.maxReplicas) (int .Values.replicas) }}
{{- fail (printf "maxReplicas %v: below replicas %v" .Values.maxReplicas .Values.replicas) }}
{{- end }}
{{- if eq (int .Values.grpcPort) (int .Values.metricsPort) }}
{{- fail (printf "grpcPort and metricsPort are both %v" .Values.grpcPort) }}
{{- end }}
{{- if and (eq .Values.mode "waypoint") (not .Values.waypoint.namespaces) (not .Values.waypoint.services) }}
{{- fail "waypoint mode: set waypoint.namespaces or waypoint.services" }}
{{- end }}
{{- end }}
