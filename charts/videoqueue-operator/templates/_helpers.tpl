{{/* Chart name, cut to the 63 characters of a label value. */}}
{{- define "videoqueue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: "<release>-<chart>", or the release name when it already holds the chart name. */}}
{{- define "videoqueue.fullname" -}}
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

{{- define "videoqueue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "videoqueue.labels" -}}
app.kubernetes.io/name: {{ include "videoqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "videoqueue.commonLabels" . }}
{{- end }}

{{/* The labels besides name and instance (pod templates add those with the selector). */}}
{{- define "videoqueue.commonLabels" -}}
helm.sh/chart: {{ include "videoqueue.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: videoqueue
{{- end }}

{{/* Selector labels of the operator pods (never change them: selectors are immutable). */}}
{{- define "videoqueue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "videoqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "videoqueue.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "videoqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "videoqueue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "videoqueue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount the operator runs as (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" or "repository@digest"; no registry host is assumed. */}}
{{- define "videoqueue.image" -}}
{{- $image := index . 0 }}
{{- $defaultTag := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $defaultTag $image.tag) }}
{{- end }}
{{- end }}

{{- define "videoqueue.redis.fullname" -}}
{{- printf "%s-redis" (include "videoqueue.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret and key holding the Redis password, as "name key"; empty without a password. */}}
{{- define "videoqueue.redis.passwordSecret" -}}
{{- if eq .Values.redis.mode "bundled" }}
{{- if .Values.redis.bundled.auth.enabled }}
{{- printf "%s %s" (default (include "videoqueue.redis.fullname" .) .Values.redis.bundled.auth.existingSecret) .Values.redis.bundled.auth.passwordKey }}
{{- end }}
{{- else if and (eq .Values.redis.mode "external") .Values.redis.external.existingSecret }}
{{- printf "%s %s" .Values.redis.external.existingSecret .Values.redis.external.passwordKey }}
{{- end }}
{{- end }}

{{- define "videoqueue.redis.url" -}}
{{- if eq .Values.redis.mode "bundled" }}
{{- printf "redis://%s.%s.svc:6379/0" (include "videoqueue.redis.fullname" .) .Release.Namespace }}
{{- else if eq .Values.redis.mode "external" }}
{{- required "redis.external.url: set the URL of your Redis (redis://host:6379/0) or use redis.mode bundled or disabled" .Values.redis.external.url }}
{{- end }}
{{- end }}
