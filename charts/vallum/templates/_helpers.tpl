{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name, 63 characters at most (a label value). */}}
{{- define "vallum.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's objects are named after it: "vallum" for a release named vallum, else
RELEASE-vallum (or RELEASE when it already contains "vallum"). */}}
{{- define "vallum.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object, without the component. */}}
{{- define "vallum.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "vallum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: vallum
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The controller's pods (and the Deployment's, Services' selector). */}}
{{- define "vallum.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vallum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "vallum.labels" -}}
{{ include "vallum.commonLabels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "vallum.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vallum.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vallum.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The proxy Service, whose addresses go into Ingress status (--publish-service). */}}
{{- define "vallum.proxyServiceName" -}}
{{- printf "%s-proxy" (include "vallum.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "vallum.metricsServiceName" -}}
{{- printf "%s-metrics" (include "vallum.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* A file of files/ (helper-owned: alerts and dashboard); empty when it is not there yet. */}}
{{- define "vallum.file" -}}
{{- $content := .context.Files.Get .path -}}
{{- if not $content -}}
{{- fail (printf "%s is not in the chart: it is needed by %s" .path .needed) -}}
{{- end -}}
{{- $content -}}
{{- end -}}
