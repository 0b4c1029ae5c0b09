{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "modelslab-sentinel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed to the chart name unless it contains it. */}}
{{- define "modelslab-sentinel.fullname" -}}
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

{{- define "modelslab-sentinel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "modelslab-sentinel.labels" -}}
helm.sh/chart: {{ include "modelslab-sentinel.chart" . }}
{{ include "modelslab-sentinel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelslab-sentinel
{{- end }}

{{- define "modelslab-sentinel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelslab-sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelslab-sentinel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelslab-sentinel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key, if any. */}}
{{- define "modelslab-sentinel.secretName" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else if .Values.apiKey.value }}
{{- include "modelslab-sentinel.fullname" . }}
{{- end }}
{{- end }}

{{/* Ports from the agent's own listen addresses (HOST:PORT). */}}
{{- define "modelslab-sentinel.adminPort" -}}
{{- $listen := dig "admin" "listen" "0.0.0.0:9477" .Values.config }}
{{- splitList ":" $listen | last }}
{{- end }}

{{- define "modelslab-sentinel.proxyPort" -}}
{{- $listen := dig "proxy" "listen" "0.0.0.0:8080" .Values.config }}
{{- splitList ":" $listen | last }}
{{- end }}

{{- define "modelslab-sentinel.proxyEnabled" -}}
{{- if dig "proxy" "enabled" false .Values.config }}true{{ end }}
{{- end }}
