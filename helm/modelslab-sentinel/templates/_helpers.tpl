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

{{/* The webhook receiver's port, when config.webhooks.listen is set. */}}
{{- define "modelslab-sentinel.webhooksPort" -}}
{{- $listen := dig "webhooks" "listen" "" .Values.config }}
{{- if $listen }}{{ splitList ":" $listen | last }}{{ end }}
{{- end }}

{{- define "modelslab-sentinel.proxyEnabled" -}}
{{- if dig "proxy" "enabled" false .Values.config }}true{{ end }}
{{- end }}

{{/*
A name of the release's with a suffix (`-proxy`, `-dashboards`), within the 63 characters of a
DNS label: the full name is cut first, so that the suffix always stays.
*/}}
{{- define "modelslab-sentinel.suffixedName" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $room := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "modelslab-sentinel.fullname" $ctx | trunc $room | trimSuffix "-") $suffix }}
{{- end }}

{{/* The Secret holding the Redis URL, if any. */}}
{{- define "modelslab-sentinel.redisSecretName" -}}
{{- if .Values.cluster.existingSecret }}
{{- .Values.cluster.existingSecret }}
{{- else if .Values.cluster.redisUrl }}
{{- include "modelslab-sentinel.fullname" . }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token, if any (the chart's own one holds every secret value). */}}
{{- define "modelslab-sentinel.adminTokenSecretName" -}}
{{- if .Values.adminToken.existingSecret }}
{{- .Values.adminToken.existingSecret }}
{{- else if .Values.adminToken.value }}
{{- include "modelslab-sentinel.fullname" . }}
{{- end }}
{{- end }}

{{/*
The agent's configuration as the ConfigMap carries it: values.config, with
`upstream.api_key: ${MODELSLAB_API_KEY}` added when the chart passes a key and the config names
neither api_key nor api_key_file.
*/}}
{{- define "modelslab-sentinel.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $upstream := $cfg.upstream | default dict }}
{{- if and (include "modelslab-sentinel.secretName" .) (not (hasKey $upstream "api_key")) (not (hasKey $upstream "api_key_file")) }}
{{- $_ := set $upstream "api_key" "${MODELSLAB_API_KEY}" }}
{{- $_ := set $cfg "upstream" $upstream }}
{{- end }}
{{- $hooks := $cfg.webhooks | default dict }}
{{- if and .Values.webhooks.ingress.enabled .Values.webhooks.ingress.host (not $hooks.public_url) }}
{{- $scheme := ternary "https" "http" (gt (len .Values.webhooks.ingress.tls) 0) }}
{{- $_ := set $hooks "public_url" (printf "%s://%s" $scheme .Values.webhooks.ingress.host) }}
{{- $_ := set $cfg "webhooks" $hooks }}
{{- end }}
{{- $cluster := $cfg.cluster | default dict }}
{{- if and (include "modelslab-sentinel.redisSecretName" .) (not (hasKey $cluster "redis_url")) (not (hasKey $cluster "redis_url_file")) }}
{{- $_ := set $cluster "redis_url" "${SENTINEL_REDIS_URL}" }}
{{- $_ := set $cfg "cluster" $cluster }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Refuses, at render time and with the reason, values that would make a release that cannot run.
Included by the Deployment.
*/}}
{{- define "modelslab-sentinel.validate" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: no public image is published. Build the Dockerfile, push it to a registry your cluster pulls from, and set image.repository (README: Kubernetes)." }}
{{- end }}
{{- $listen := dig "admin" "listen" "0.0.0.0:9477" .Values.config }}
{{- $host := regexReplaceAll ":[0-9]+$" $listen "" | trimPrefix "[" | trimSuffix "]" }}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") }}
{{- fail (printf "config.admin.listen %s is a loopback address: the kubelet's liveness and readiness probes, and Prometheus, could never reach it. Listen on 0.0.0.0:PORT (POSTs still need admin.token or a loopback client)." $listen) }}
{{- end }}
{{- $upstream := .Values.config.upstream | default dict }}
{{- $hasKey := or (include "modelslab-sentinel.secretName" .) (hasKey $upstream "api_key_file") (and (hasKey $upstream "api_key") (not (hasPrefix "${" (toString $upstream.api_key)))) }}
{{- if not $hasKey }}
{{- range (.Values.config.probes | default list) }}
{{- $request := .request | default dict }}
{{- $body := $request.body | default dict }}
{{- if and (ne (toString (dig "inject_key" true $request)) "false") (not (hasKey $body "key")) }}
{{- fail (printf "probe %q sends the API key, but none is given: set apiKey.existingSecret (a Secret you made: kubectl create secret generic modelslab-api-key --from-literal=api-key=...) or apiKey.value, or config.upstream.api_key_file with extraVolumes; or give the probe `inject_key: false`." .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- $several := or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) }}
{{- $cluster := .Values.config.cluster | default dict }}
{{- $redis := or (include "modelslab-sentinel.redisSecretName" .) $cluster.redis_url $cluster.redis_url_file }}
{{- if and $several (not $redis) (not .Values.cluster.allowReplicasWithoutRedis) }}
{{- fail "several replicas need Redis to agree: without it each replica runs every probe (spending N times the credits of a generation probe) and follows only the jobs whose polls reach it (behind a plain Service, half look expired in one pod and untracked in another). Set cluster.existingSecret (or cluster.redisUrl) to a Redis URL, or set cluster.allowReplicasWithoutRedis=true to accept that." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- $hooks := .Values.config.webhooks | default dict }}
{{- if and .Values.webhooks.ingress.enabled (not (include "modelslab-sentinel.webhooksPort" .)) }}
{{- fail "webhooks.ingress is on but the receiver is off: set config.webhooks.listen (e.g. 0.0.0.0:9478)." }}
{{- end }}
{{- if and .Values.webhooks.ingress.enabled (not .Values.webhooks.ingress.host) }}
{{- fail "webhooks.ingress.host is empty: the host the API will call (e.g. sentinel-hooks.example.com)." }}
{{- end }}
{{- if and (include "modelslab-sentinel.webhooksPort" .) (not $hooks.public_url) (not .Values.webhooks.ingress.enabled) }}
{{- fail "config.webhooks.listen is set but nothing tells the API where to call: set config.webhooks.public_url to a URL the API reaches, or turn on webhooks.ingress with its host." }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if and (include "modelslab-sentinel.webhooksPort" .) (not .Values.networkPolicy.webhooksFrom) }}
{{- fail "networkPolicy.webhooksFrom is empty: list the peers that deliver webhooks (your ingress controller's pods); an empty list would admit every source." }}
{{- end }}
{{- if not .Values.networkPolicy.metricsFrom }}
{{- fail "networkPolicy.metricsFrom is empty: list the peers that scrape the agent (e.g. a namespaceSelector for your monitoring namespace); an empty list would admit every source." }}
{{- end }}
{{- if and (include "modelslab-sentinel.proxyEnabled" .) (not .Values.networkPolicy.proxyFrom) }}
{{- fail "networkPolicy.proxyFrom is empty: list the peers that send API calls through the proxy (e.g. a podSelector for your application); an empty list would admit every source." }}
{{- end }}
{{- end }}
{{- end }}
