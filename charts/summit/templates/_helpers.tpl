{{/*
Names, labels, image references and the hardened pod and container settings shared by every
workload of the chart. Every pod the chart renders takes its security context from here, so
that none can be less confined than the plugin pods the orchestrator creates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "summit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: fullnameOverride, the release name, or release-chart. */}}
{{- define "summit.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "summit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Names of the objects. */}}
{{- define "summit.workerName" -}}
{{- printf "%s-worker" (include "summit.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "summit.postgresqlName" -}}
{{- printf "%s-postgresql" (include "summit.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "summit.redisName" -}}
{{- printf "%s-redis" (include "summit.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "summit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "summit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the chart generates (keys, URLs, database passwords). */}}
{{- define "summit.secretName" -}}
{{- include "summit.fullname" . -}}
{{- end -}}

{{/* The namespace plugin pods run in. */}}
{{- define "summit.pluginNamespace" -}}
{{- default (printf "%s-plugins" (include "summit.fullname" .)) .Values.plugins.namespace.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "summit.labels" -}}
helm.sh/chart: {{ include "summit.chart" . }}
app.kubernetes.io/name: {{ include "summit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: summit
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: call with (dict "ctx" $ "component" "orchestrator"). */}}
{{- define "summit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "summit.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The labels that mark the pods allowed to call plugin pods (orchestrator and worker). The
orchestrator writes them into every plugin pod's NetworkPolicy
(SUMMIT_KUBE_ORCHESTRATOR_LABELS), and the plugin namespace's own policy uses them too; both
pod templates carry them.
*/}}
{{- define "summit.pluginCallerLabels" -}}
app.kubernetes.io/name: {{ include "summit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
summit.io/plugin-caller: "true"
{{- end -}}

{{/* The same labels as KEY=VALUE,KEY=VALUE for SUMMIT_KUBE_ORCHESTRATOR_LABELS. */}}
{{- define "summit.pluginCallerSelector" -}}
{{- $pairs := list -}}
{{- range $key, $value := (include "summit.pluginCallerLabels" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* An image reference from {registry, repository, tag, digest}: call with (dict "image" ... "default" tag). */}}
{{- define "summit.imageRef" -}}
{{- $repository := .image.repository -}}
{{- if .image.registry -}}
{{- $repository = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "summit.image" -}}
{{- include "summit.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* imagePullSecrets of the chart's own pods. */}}
{{- define "summit.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Pod-level security context: call with the uid. runAsNonRoot with a non-zero uid, the
container runtime's default seccomp profile, and an fsGroup so that volumes are writable.
*/}}
{{- define "summit.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  fsGroup: {{ . }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: call with the uid. Nothing to escalate to, nothing to write. */}}
{{- define "summit.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The uid of the orchestrator image. */}}
{{- define "summit.orchestratorUid" -}}10001{{- end -}}

{{/* Whether a Redis URL is configured (built-in or external): "true" or "". */}}
{{- define "summit.hasRedis" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Where SUMMIT_DATABASE_URL comes from: a secretKeyRef body. */}}
{{- define "summit.databaseUrlRef" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecret -}}
name: {{ .Values.externalDatabase.existingSecret }}
key: {{ .Values.externalDatabase.existingSecretKey }}
{{- else -}}
name: {{ include "summit.secretName" . }}
key: database-url
{{- end -}}
{{- end -}}

{{/* Where SUMMIT_REDIS_URL comes from: a secretKeyRef body. */}}
{{- define "summit.redisUrlRef" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
name: {{ .Values.externalRedis.existingSecret }}
key: {{ .Values.externalRedis.existingSecretKey }}
{{- else -}}
name: {{ include "summit.secretName" . }}
key: redis-url
{{- end -}}
{{- end -}}

{{/*
The environment both the orchestrator and the worker read from Secrets: the database and
Redis URLs, the admin token and the secrets key.
*/}}
{{- define "summit.secretEnv" -}}
- name: SUMMIT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- include "summit.databaseUrlRef" . | nindent 6 }}
{{- if include "summit.hasRedis" . }}
- name: SUMMIT_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- include "summit.redisUrlRef" . | nindent 6 }}
{{- end }}
- name: SUMMIT_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ default (include "summit.secretName" .) .Values.auth.existingSecret }}
      key: {{ ternary .Values.auth.adminTokenKey "admin-token" (not (empty .Values.auth.existingSecret)) }}
- name: SUMMIT_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (include "summit.secretName" .) .Values.auth.existingSecret }}
      key: {{ ternary .Values.auth.secretsKeyKey "secrets-key" (not (empty .Values.auth.existingSecret)) }}
{{- end -}}

{{/* The downward-API environment: the orchestrator tells plugins to call POD_IP. */}}
{{- define "summit.downwardEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/*
Checks of combinations the schema cannot express; each failure names the values to set.
*/}}
{{- define "summit.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.url) (not .Values.externalDatabase.existingSecret) -}}
{{- fail "summit: no database: set postgresql.enabled=true (a trial PostgreSQL), or externalDatabase.url or externalDatabase.existingSecret (SQLite cannot be shared by replicas)" -}}
{{- end -}}
{{- if and .Values.externalDatabase.url (not (hasPrefix "postgresql" .Values.externalDatabase.url)) -}}
{{- fail "summit: externalDatabase.url must be a PostgreSQL SQLAlchemy URL (postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)" -}}
{{- end -}}
{{- if and (not (include "summit.hasRedis" .)) (or .Values.worker.enabled (gt (int .Values.orchestrator.replicaCount) 1)) -}}
{{- fail "summit: Redis is needed by the worker and by more than one orchestrator replica (job queue, route changes, shared rate limits): set redis.enabled=true, or externalRedis.url or externalRedis.existingSecret" -}}
{{- end -}}
{{- $tiers := list .Values.plugins.isolation .Values.plugins.isolationUnsigned -}}
{{- if and (has "gvisor" $tiers) (not .Values.plugins.runtimeClasses.gvisor) -}}
{{- fail "summit: a plugin isolation tier is gvisor but plugins.runtimeClasses.gvisor names no RuntimeClass; without one those plugins would run under the default runtime" -}}
{{- end -}}
{{- if and .Values.plugins.gvisorRuntimeClass.create (not .Values.plugins.runtimeClasses.gvisor) -}}
{{- fail "summit: plugins.gvisorRuntimeClass.create needs plugins.runtimeClasses.gvisor (the RuntimeClass name)" -}}
{{- end -}}
{{- if eq (int .Values.orchestrator.port) (int .Values.orchestrator.hostApiPort) -}}
{{- fail "summit: orchestrator.port and orchestrator.hostApiPort must differ" -}}
{{- end -}}
{{- $reserved := list "ADMIN_TOKEN" "SECRETS_KEY" "DATABASE_URL" "REDIS_URL" "DEV" "INSTANCE" "RUNTIME" "STATE_DIR" "KUBE_NAMESPACE" "KUBE_IMAGE_PULL_SECRETS" "KUBE_RUNTIME_CLASSES" "KUBE_PLUGIN_PORT" "KUBE_ORCHESTRATOR_NAMESPACE" "KUBE_ORCHESTRATOR_LABELS" "HOST_API_PORT" "HOST_API_ADDRESS" "ISOLATION" "ISOLATION_UNSIGNED" "EMBEDDED_WORKER" "REQUIRE_SIGNED" "INSECURE_REGISTRIES" "WORKER_CONCURRENCY" -}}
{{- range $name, $_ := .Values.orchestrator.extraConfig -}}
{{- if has $name $reserved -}}
{{- fail (printf "summit: orchestrator.extraConfig.%s is set by the chart itself (see the README's parameter table for the value that controls it)" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
NetworkPolicy egress rules both the orchestrator and the worker need: DNS, the databases, the
plugin pods, the internet (registries: the worker runs installs too) and the extra rules.
*/}}
{{- define "summit.commonEgress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- if $egress.dns }}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- if .Values.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "summit.selectorLabels" (dict "ctx" . "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else }}
- to:
    {{- range $egress.externalDatabaseCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.externalDatabase.port }}
      protocol: TCP
{{- end }}
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "summit.selectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else if include "summit.hasRedis" . }}
- to:
    {{- range $egress.externalRedisCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.externalRedis.port }}
      protocol: TCP
{{- end }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ include "summit.pluginNamespace" . }}
  ports:
    - port: {{ .Values.plugins.port }}
      protocol: TCP
{{- if $egress.internet.enabled }}
# The internet: OCI registries (installs read the image's manifest), the egress proxy for
# plugins' allowed_hosts, and webhooks.
- to:
    {{- range $egress.internet.ipBlocks }}
    - ipBlock:
        {{- toYaml . | nindent 8 }}
    {{- end }}
  {{- with $egress.internet.ports }}
  ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- end }}
{{- end }}
{{- with $egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}
