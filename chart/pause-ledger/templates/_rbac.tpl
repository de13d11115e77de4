{{/*
The rules one component needs in one namespace. Argument: dict with ctx, ns, component.

restore (and the rescue Job, which shares its RBAC):
  - the ledger ConfigMap, by name: get (read) + patch (status write-back);
  - each target kind (the preset's objects by name, then `targets`), in the namespaces listed
    for it: get + patch (compare-and-set JSON patch; the --settle guard re-reads and
    re-patches); list only with rbac.listTargets and no resourceNames;
  - ManagedChart targets with a propagation window: get on their Fleet Bundles (mcc-<name>);
  - with a Harvester preset, in harvester.namespace: list on upgrades.harvesterhci.io (is a
    Harvester upgrade still running?);
  - with run.events: create on core events where it touches objects.
record: create on configmaps (a name cannot restrict create) and get + patch of the ledger by
name; get + patch on the targets; create on events.
Nothing cluster-wide and no other verb. API discovery needs no rule: the default
system:discovery binding allows it to every authenticated user.
*/}}
{{- define "pause-ledger.rules" -}}
{{- $ := .ctx }}
{{- $ns := .ns }}
{{- $component := .component }}
{{- $v := $.Values }}
{{- if eq $ns $v.ledger.namespace }}
{{- if eq $component "record" }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
{{- end }}
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: [{{ $v.ledger.name | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- range (include "pause-ledger.targets" $ | fromYamlArray) }}
{{- if has $ns .namespaces }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource | quote }}]
  {{- with .resourceNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: {{ ternary (list "get" "list" "patch") (list "get" "patch") (and $v.rbac.listTargets (ne $component "record") (empty .resourceNames)) | toJson }}
{{- if and (eq $component "restore") (eq .apiGroup "management.cattle.io") (eq .resource "managedcharts") (not (regexMatch "^0+(ms|s|m|h)?$" $v.verify.propagationWindow)) }}
- apiGroups: ["fleet.cattle.io"]
  resources: ["bundles"]
  {{- with .resourceNames }}
  resourceNames: [{{ range $i, $n := . }}{{ if $i }}, {{ end }}{{ printf "mcc-%s" $n | quote }}{{ end }}]
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- end }}
{{- end }}
{{- if and (ne $component "record") (eq $ns $v.harvester.namespace) (include "pause-ledger.upgradeCheck" $) }}
- apiGroups: ["harvesterhci.io"]
  resources: ["upgrades"]
  verbs: ["list"]
{{- end }}
{{- $touched := eq $ns $v.ledger.namespace }}
{{- range (include "pause-ledger.targets" $ | fromYamlArray) }}{{ if has $ns .namespaces }}{{ $touched = true }}{{ end }}{{ end }}
{{- if and $v.run.events $touched }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
{{- end }}

{{/* A Role and RoleBinding per namespace that needs rules. Argument: dict with ctx, component, events. */}}
{{- define "pause-ledger.rbac" -}}
{{- $ := .ctx }}
{{- $component := .component }}
{{- $events := .events }}
{{- $name := printf "%s-%s" (include "pause-ledger.fullname" $) $component }}
{{- range $ns := splitList "," (include "pause-ledger.restoreNamespaces" $) }}
{{- if include "pause-ledger.rules" (dict "ctx" $ "ns" $ns "component" $component) | trim }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ $ns }}
  labels:
    {{- include "pause-ledger.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
  annotations:
    {{- include "pause-ledger.hookAnnotations" (list $ $events "-20") | nindent 4 }}
rules:
  {{- include "pause-ledger.rules" (dict "ctx" $ "ns" $ns "component" $component) | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $ns }}
  labels:
    {{- include "pause-ledger.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
  annotations:
    {{- include "pause-ledger.hookAnnotations" (list $ $events "-10") | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "pause-ledger.serviceAccountName" $ }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end }}
{{- end }}
