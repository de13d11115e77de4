{{/*
A hook Job. Argument: dict with
  ctx       the root context
  component "restore", "record" or "rescue" (also the container name podFailurePolicy refers to)
  events    comma-separated Helm hook events; empty for a plain Job (a manual rescue)
  weight    hook weight (restore 0, rescue 10: after the restore of the same event)
  args      container args (the image's ENTRYPOINT is the binary)
  env       list of {name, value}
*/}}
{{- define "pause-ledger.job" -}}
{{- $ := .ctx }}
{{- $component := .component }}
{{- include "pause-ledger.checkTimeouts" $ }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "pause-ledger.fullname" $ }}-{{ .component }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "pause-ledger.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- /* jobAnnotations first, so the hook annotations the chart depends on win. */}}
  {{- $annotations := deepCopy $.Values.jobAnnotations }}
  {{- if .events }}
  {{- $annotations = merge (include "pause-ledger.hookAnnotations" (list $ .events (default "0" .weight)) | fromYaml) $annotations }}
  {{- if $.Values.hooks.outputLogsOnFailure }}
  {{- $_ := set $annotations "helm.sh/hook-output-log-policy" "hook-failed" }}
  {{- end }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # No ttlSecondsAfterFinished: a TTL can delete the Job before Helm's wait has seen it
  # finish. Helm's delete policy cleans up instead.
  backoffLimit: {{ $.Values.job.backoffLimit }}
  activeDeadlineSeconds: {{ $.Values.job.activeDeadlineSeconds }}
  podFailurePolicy:
    rules:
      # A retry cannot fix these: usage, invalid ledger, RBAC, deadline, no ledger, and
      # another upgrade's unrestored ledger (record).
      {{- with $.Values.job.failFastExitCodes }}
      - action: FailJob
        onExitCodes:
          containerName: {{ $component }}
          operator: In
          values: {{ toJson . }}
      {{- end }}
      # An evicted or preempted pod is not the tool's failure: do not count it.
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
  template:
    metadata:
      labels:
        {{- include "pause-ledger.labels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
        {{- with $.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "pause-ledger.serviceAccountName" $ }}
      # The ServiceAccount disables automounting; this pod is the one that needs the token.
      automountServiceAccountToken: true
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $.Values.job.terminationGracePeriodSeconds }}
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $.Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "pause-ledger.image" $ | quote }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            {{- toYaml .env | nindent 12 }}
          # On failure the last log lines become the termination message (kubectl describe).
          terminationMessagePolicy: FallbackToLogsOnError
          {{- with $.Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $.Values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with $.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
