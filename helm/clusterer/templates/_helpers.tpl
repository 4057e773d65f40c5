{{/*
Name of the chart, overridable.
*/}}
{{- define "clusterer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (63 characters at most: DNS names).
*/}}
{{- define "clusterer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "clusterer.apiName" -}}
{{- printf "%s-api" (include "clusterer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels; the component (worker or api) is added per object.
*/}}
{{- define "clusterer.labels" -}}
helm.sh/chart: {{ include "clusterer.chart" . }}
{{ include "clusterer.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stage4-clusterer
{{- end }}

{{- define "clusterer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clusterer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clusterer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clusterer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clusterer.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
The [engine] TOML table. --set hands numbers over as strings ("0.6") and YAML numbers arrive
as floats (1e+06 for a million): numeric text becomes a TOML number and whole numbers
integers. values.schema.json allows numeric text only for the numeric keys of EngineConfig.
*/}}
{{- define "clusterer.engineToml" -}}
[engine]
{{- range $key, $value := .Values.engine }}
{{- if and (kindIs "string" $value) (regexMatch "^[-+]?[0-9]+$" $value) }}
{{ $key }} = {{ int64 $value }}
{{- else if and (kindIs "string" $value) (regexMatch "^[-+]?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$" $value) }}
{{ $key }} = {{ float64 $value }}
{{- else if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{ $key }} = {{ int64 $value }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{ $key }} = {{ $value }}
{{- else }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Settings both the workers and the API read.
*/}}
{{- define "clusterer.commonEnv" -}}
- name: CLUSTERER_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: CLUSTERER_INPUT_TOPICS
  value: {{ .Values.kafka.inputTopics | quote }}
- name: CLUSTERER_PREFIX
  value: {{ .Values.kafka.prefix | quote }}
- name: CLUSTERER_GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: CLUSTERER_REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: CLUSTERER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: CLUSTERER_POSTGRES_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgres.existingSecret }}
      key: {{ .Values.postgres.secretKey }}
{{- end }}
