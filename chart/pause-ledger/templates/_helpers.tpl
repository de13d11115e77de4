{{/* Chart name, truncated to a DNS label. */}}
{{- define "pause-ledger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name. Kept to 52 characters so "<fullname>-restore" and "<fullname>-record" stay valid
names, and the Job's pods ("<job>-xxxxx") stay within 63.
*/}}
{{- define "pause-ledger.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pause-ledger.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pause-ledger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pause-ledger.serviceAccountName" -}}
{{- default (include "pause-ledger.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The image reference: a digest pins it; else the tag (default: appVersion). */}}
{{- define "pause-ledger.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Comma-separated Helm events that run the restore Job; empty when none is enabled. */}}
{{- define "pause-ledger.restoreEvents" -}}
{{- $events := list }}
{{- if .Values.hooks.postUpgrade }}{{ $events = append $events "post-upgrade" }}{{ end }}
{{- if .Values.hooks.postRollback }}{{ $events = append $events "post-rollback" }}{{ end }}
{{- if .Values.hooks.preDelete }}{{ $events = append $events "pre-delete" }}{{ end }}
{{- join "," $events }}
{{- end }}

{{/* Helm events that run the record Job. */}}
{{- define "pause-ledger.recordEvents" -}}
{{- if .Values.record.enabled }}pre-upgrade{{ end }}
{{- end }}

{{/*
Hook annotations. Argument: (list $ctx "<events>" "<weight>"). The ServiceAccount and RBAC are
hooks of the same events as their Job with lower weights, so they exist when the Job starts
(pre-delete included: by then the release's ordinary resources may be going away).
*/}}
{{- define "pause-ledger.hookAnnotations" -}}
{{- $ctx := index . 0 -}}
helm.sh/hook: {{ index . 1 }}
helm.sh/hook-weight: {{ index . 2 | quote }}
helm.sh/hook-delete-policy: {{ include "pause-ledger.deletePolicy" $ctx }}
{{- end }}

{{- define "pause-ledger.deletePolicy" -}}
{{- $policies := list "before-hook-creation" }}
{{- range (splitList "," .Values.hooks.deletePolicy) }}
{{- $p := trim . }}
{{- if and $p (not (has $p $policies)) }}{{ $policies = append $policies $p }}{{ end }}
{{- end }}
{{- join "," $policies }}
{{- end }}

{{/* Namespaces that get a restore Role: the ledger's and every target's, deduplicated. */}}
{{- define "pause-ledger.restoreNamespaces" -}}
{{- $ns := list .Values.ledger.namespace }}
{{- range .Values.targets }}
{{- range .namespaces }}{{ $ns = append $ns . }}{{ end }}
{{- end }}
{{- $ns | uniq | join "," }}
{{- end }}

{{/*
Refuses inconsistent timeouts: the Job must outlive the tool's own deadline, or the kubelet
kills a run that would have finished and written its status.
*/}}
{{- define "pause-ledger.checkTimeouts" -}}
{{- if le (int .Values.job.activeDeadlineSeconds) (int .Values.restore.timeoutSeconds) }}
{{- fail (printf "job.activeDeadlineSeconds (%d) must be greater than restore.timeoutSeconds (%d): see the chart README, Timeouts" (int .Values.job.activeDeadlineSeconds) (int .Values.restore.timeoutSeconds)) }}
{{- end }}
{{- end }}

{{/*
Environment shared by every command that writes (restore, record, rescue), as a YAML list.
Every flag has a PAUSE_LEDGER_* variable, so the Jobs configure the tool through env alone.
*/}}
{{- define "pause-ledger.runEnv" -}}
- {name: PAUSE_LEDGER_TIMEOUT, value: {{ printf "%ds" (int .Values.restore.timeoutSeconds) | quote }}}
- {name: PAUSE_LEDGER_LOG_FORMAT, value: {{ .Values.restore.logFormat | quote }}}
- {name: PAUSE_LEDGER_LOG, value: {{ .Values.restore.logLevel | quote }}}
- {name: PAUSE_LEDGER_OUTPUT, value: {{ .Values.restore.output | quote }}}
- {name: PAUSE_LEDGER_PROGRESS, value: "never"}
- {name: PAUSE_LEDGER_EVENTS, value: {{ .Values.restore.events | toString | quote }}}
{{- end }}

{{/* Verification flags of restore and rescue, as a YAML list. */}}
{{- define "pause-ledger.verifyEnv" -}}
- {name: PAUSE_LEDGER_PROPAGATION_WINDOW, value: {{ .Values.restore.propagationWindow | quote }}}
- {name: PAUSE_LEDGER_SETTLE, value: {{ .Values.restore.settle | quote }}}
{{- with .Values.restore.waitReady }}
- {name: PAUSE_LEDGER_WAIT_READY, value: {{ . | quote }}}
{{- end }}
{{- if .Values.restore.failOnNotReady }}
- {name: PAUSE_LEDGER_FAIL_ON_NOT_READY, value: "true"}
{{- end }}
{{- end }}
