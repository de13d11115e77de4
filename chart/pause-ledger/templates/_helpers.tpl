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

{{/*
The Jobs' ServiceAccount: the one the chart creates (default: the full name), or an existing
one, which must then be named: binding RBAC to a namespace's `default` account would hand the
permissions to every pod there.
*/}}
{{- define "pause-ledger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pause-ledger.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.create=false needs serviceAccount.name (an existing ServiceAccount)" }}
{{- end }}
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
{{- if .Values.hooks.postInstall }}{{ $events = append $events "post-install" }}{{ end }}
{{- if .Values.hooks.postUpgrade }}{{ $events = append $events "post-upgrade" }}{{ end }}
{{- if .Values.hooks.postRollback }}{{ $events = append $events "post-rollback" }}{{ end }}
{{- if .Values.hooks.preDelete }}{{ $events = append $events "pre-delete" }}{{ end }}
{{- join "," $events }}
{{- end }}

{{/* Helm events that run the record Job. */}}
{{- define "pause-ledger.recordEvents" -}}
{{- if .Values.record.enabled }}pre-upgrade{{ end }}
{{- end }}

{{/* Helm events that run the rescue Job; empty when it is only rendered for a manual run. */}}
{{- define "pause-ledger.rescueEvents" -}}
{{- if and .Values.rescue.enabled .Values.rescue.hook }}post-install,post-upgrade{{ end }}
{{- end }}

{{/*
Events of what the restore and rescue Jobs share (their RBAC): the union of both Jobs' events.
A rescue Job rendered for a manual run only still needs hook annotations on its RBAC (they are
inert outside Helm): post-upgrade then.
*/}}
{{- define "pause-ledger.restoreRbacEvents" -}}
{{- $events := list }}
{{- range (list (include "pause-ledger.restoreEvents" .) (include "pause-ledger.rescueEvents" .)) }}
{{- range (splitList "," .) }}{{ if . }}{{ $events = append $events . }}{{ end }}{{ end }}
{{- end }}
{{- if and (not $events) .Values.rescue.enabled }}{{ $events = list "post-upgrade" }}{{ end }}
{{- $events | uniq | join "," }}
{{- end }}

{{/* Events of the ServiceAccount: every Job's. */}}
{{- define "pause-ledger.serviceAccountEvents" -}}
{{- $events := list }}
{{- range (list (include "pause-ledger.restoreRbacEvents" .) (include "pause-ledger.recordEvents" .)) }}
{{- range (splitList "," .) }}{{ if . }}{{ $events = append $events . }}{{ end }}{{ end }}
{{- end }}
{{- $events | uniq | join "," }}
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

{{/*
The objects of a preset, as a YAML list of names. Must stay the set the binary's `--preset`
handles (src/preset.rs; tests/chart.rs compares them).
*/}}
{{- define "pause-ledger.presetNames" -}}
{{- if eq .Values.preset.name "harvester" }}
- harvester-crd
- rancher-monitoring-crd
- rancher-logging-crd
- harvester
{{- else if eq .Values.preset.name "harvester-1.2" }}
- harvester-crd
- rancher-monitoring-crd
- rancher-logging-crd
- harvester
- rancher-monitoring
- rancher-logging
{{- else if eq .Values.preset.name "harvester-1.0" }}
- harvester-crd
- rancher-monitoring-crd
- harvester
- rancher-monitoring
{{- end }}
{{- end }}

{{/*
What the Jobs may touch, as a YAML list of {apiGroup, resource, namespaces, resourceNames}:
the preset's objects, by name, then `targets`.
*/}}
{{- define "pause-ledger.targets" -}}
{{- $targets := list }}
{{- if .Values.preset.name }}
{{- $targets = append $targets (dict "apiGroup" "management.cattle.io" "resource" "managedcharts" "namespaces" (list .Values.preset.namespace) "resourceNames" (include "pause-ledger.presetNames" . | fromYamlArray)) }}
{{- end }}
{{- $targets = concat $targets .Values.targets }}
{{- if not $targets }}
{{- fail "nothing to restore: set preset.name or list targets" }}
{{- end }}
{{- toYaml $targets }}
{{- end }}

{{/* Namespaces that get a Role: the ledger's and every target's, deduplicated. */}}
{{- define "pause-ledger.restoreNamespaces" -}}
{{- $ns := list .Values.ledger.namespace }}
{{- range (include "pause-ledger.targets" . | fromYamlArray) }}
{{- range .namespaces }}{{ $ns = append $ns . }}{{ end }}
{{- end }}
{{- if include "pause-ledger.upgradeCheck" . }}{{ $ns = append $ns .Values.harvester.namespace }}{{ end }}
{{- $ns | uniq | join "," }}
{{- end }}

{{/*
Non-empty when the restore and rescue Jobs check for a running Harvester upgrade: with a
Harvester preset (they refuse, exit 11, while the latest Upgrade has not completed or failed).
*/}}
{{- define "pause-ledger.upgradeCheck" -}}
{{- if and .Values.harvester.upgradeCheck (hasPrefix "harvester" .Values.preset.name) }}true{{ end }}
{{- end }}

{{/*
Refuses inconsistent timeouts. The process may run until its --timeout + 5 s (the binary's
watchdog ends it then), and the Job's clock starts before the pod does: Kubernetes' pod
startup SLO is 5 s (99th percentile, image pulls excluded). So the Job must allow timeout + 10,
or the kubelet kills a run that would have finished and written its status by itself.
*/}}
{{- define "pause-ledger.checkTimeouts" -}}
{{- $min := add (int .Values.run.timeoutSeconds) 10 }}
{{- if lt (int .Values.job.activeDeadlineSeconds) (int $min) }}
{{- fail (printf "job.activeDeadlineSeconds (%d) must be at least run.timeoutSeconds + 10 (%d): the tool may run until its timeout + 5 s, and its pod needs time to start (chart README, Timeouts)" (int .Values.job.activeDeadlineSeconds) (int $min)) }}
{{- end }}
{{- end }}

{{/*
Environment shared by every command that writes (restore, record, rescue), as a YAML list.
Every flag has a PAUSE_LEDGER_* variable, so the Jobs configure the tool through env alone.
*/}}
{{- define "pause-ledger.runEnv" -}}
- {name: PAUSE_LEDGER_TIMEOUT, value: {{ printf "%ds" (int .Values.run.timeoutSeconds) | quote }}}
- {name: PAUSE_LEDGER_LOG_FORMAT, value: {{ .Values.run.logFormat | quote }}}
- {name: PAUSE_LEDGER_LOG, value: {{ .Values.run.logLevel | quote }}}
- {name: PAUSE_LEDGER_OUTPUT, value: {{ .Values.run.output | quote }}}
- {name: PAUSE_LEDGER_PROGRESS, value: "never"}
- {name: PAUSE_LEDGER_EVENTS, value: {{ .Values.run.events | toString | quote }}}
{{- end }}

{{/* Verification flags of restore and rescue, as a YAML list. */}}
{{- define "pause-ledger.verifyEnv" -}}
- {name: PAUSE_LEDGER_PROPAGATION_WINDOW, value: {{ .Values.verify.propagationWindow | quote }}}
- {name: PAUSE_LEDGER_SETTLE, value: {{ .Values.verify.settle | quote }}}
{{- with .Values.verify.waitReady }}
- {name: PAUSE_LEDGER_WAIT_READY, value: {{ . | quote }}}
{{- end }}
{{- if .Values.verify.failOnNotReady }}
- {name: PAUSE_LEDGER_FAIL_ON_NOT_READY, value: "true"}
{{- end }}
- {name: PAUSE_LEDGER_WAVE_GATE, value: {{ .Values.verify.waveGate | quote }}}
{{- if not (include "pause-ledger.upgradeCheck" .) }}
- {name: PAUSE_LEDGER_IGNORE_RUNNING_UPGRADE, value: "true"}
{{- end }}
{{- end }}
