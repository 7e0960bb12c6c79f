{{/* Names and labels shared by every template. */}}

{{- define "gpufair.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpufair.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "scheduler") */}}
{{- define "gpufair.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpufair.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gpufair.schedulerName" -}}{{ include "gpufair.fullname" . }}-scheduler{{- end -}}
{{- define "gpufair.agentName" -}}{{ include "gpufair.fullname" . }}-agent{{- end -}}
{{- define "gpufair.mqttName" -}}{{ include "gpufair.fullname" . }}-mqtt{{- end -}}

{{/* host:port of the MQTT broker the scheduler and the agents use. */}}
{{- define "gpufair.mqttAddress" -}}
{{- if .Values.mqtt.bundled -}}
{{ include "gpufair.mqttName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.mqtt.broker.port }}
{{- else -}}
{{- required "mqtt.externalAddress (host:port) is required when mqtt.bundled is false" .Values.mqtt.externalAddress -}}
{{- end -}}
{{- end -}}

{{/* The restricted pod-level security context every gpufair pod runs with. */}}
{{- define "gpufair.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gpufair.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Fail early on values that cannot work together. */}}
{{- define "gpufair.validate" -}}
{{- if not (has .Values.ledger.type (list "sqlite" "postgresql" "none")) -}}
{{- fail (printf "ledger.type %q is not one of sqlite, postgresql, none" .Values.ledger.type) -}}
{{- end -}}
{{- if and (eq .Values.ledger.type "postgresql") (not .Values.ledger.postgresql.existingSecret) -}}
{{- fail "ledger.postgresql.existingSecret is required with ledger.type postgresql: create a Secret holding the database URL and name it here" -}}
{{- end -}}
{{- if and .Values.agent.enabled (not .Values.mqtt.enabled) -}}
{{- fail "agent.enabled needs mqtt.enabled: the node agent publishes its telemetry over MQTT" -}}
{{- end -}}
{{- if and .Values.mqtt.certManager.enabled (not .Values.mqtt.certManager.issuerRef.name) -}}
{{- fail "mqtt.certManager.issuerRef.name is required with mqtt.certManager.enabled" -}}
{{- end -}}
{{- if lt (int .Values.scheduler.replicas) 1 -}}
{{- fail "scheduler.replicas must be at least 1" -}}
{{- end -}}
{{- end -}}
