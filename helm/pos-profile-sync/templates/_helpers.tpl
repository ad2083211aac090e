{{/*
Names, labels and the rendering of config.toml.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "pps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of the release's resources. */}}
{{- define "pps.fullname" -}}
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

{{/* chart-version, as in the helm.sh/chart label. */}}
{{- define "pps.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods; never change them after the first install. */}}
{{- define "pps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pps.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "pps.labels" -}}
helm.sh/chart: {{ include "pps.chart" . }}
{{ include "pps.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pos-profile-sync
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "pps.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pps.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference; a digest wins over the tag. */}}
{{- define "pps.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Where files live inside the pod. These paths are part of the service's documented setup. */}}
{{- define "pps.configDir" -}}/etc/pos-profile-sync{{- end -}}
{{- define "pps.configPath" -}}/etc/pos-profile-sync/config.toml{{- end -}}
{{- define "pps.targetSecretDir" -}}/var/run/secrets/pos-profile-sync/target{{- end -}}
{{- define "pps.kafkaSecretDir" -}}/var/run/secrets/pos-profile-sync/kafka{{- end -}}

{{/* The HTTP port, taken from config.server.listen ("host:port" or "[v6]:port"). */}}
{{- define "pps.httpPort" -}}
{{- $listen := toString .Values.config.server.listen -}}
{{- $port := regexFind "[0-9]+$" $listen -}}
{{- if not $port -}}
{{- fail (printf "config.server.listen %q must end with :PORT" $listen) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* The drain deadline in milliseconds (the service's default when unset). */}}
{{- define "pps.drainTimeoutMs" -}}
{{- $delivery := .Values.config.delivery | default dict -}}
{{- $ms := get $delivery "drain_timeout_ms" -}}
{{- if kindIs "invalid" $ms -}}10000{{- else -}}{{ int64 $ms }}{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: the drain deadline rounded up to seconds, plus the margin. */}}
{{- define "pps.terminationGracePeriodSeconds" -}}
{{- $ms := include "pps.drainTimeoutMs" . | int64 -}}
{{- add (div (add $ms 999) 1000) (int64 .Values.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/*
The configuration as the service will see it: .Values.config plus the file paths
of the mounted Secrets. Returned as YAML (include + fromYaml), since templates
can only return strings. Fails on inlined secrets and on settings the service
would reject at start-up, so that `helm lint` and `helm install` catch them.
*/}}
{{- define "pps.effectiveConfig" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $kafka := get $cfg "kafka" | default dict -}}
{{- $props := get $kafka "properties" | default dict -}}
{{- $target := get $cfg "target" | default dict -}}
{{- $secrets := .Values.secrets -}}
{{- range $key := list "sasl.password" "ssl.key.password" "ssl.key.pem" "ssl.keystore.password" "sasl.oauthbearer.client.secret" -}}
{{- if hasKey $props $key -}}
{{- fail (printf "config.kafka.properties[%q] would put a secret into the ConfigMap: name an existing Secret under secrets.kafkaSasl or secrets.kafkaTls instead" $key) -}}
{{- end -}}
{{- end -}}
{{- $kafkaDir := include "pps.kafkaSecretDir" . -}}
{{- $derived := dict -}}
{{- if $secrets.kafkaSasl.existingSecret -}}
{{- $_ := set $derived "sasl.password_file" (printf "%s/sasl-password" $kafkaDir) -}}
{{- end -}}
{{- if $secrets.kafkaTls.existingSecret -}}
{{- if not (or $secrets.kafkaTls.caKey $secrets.kafkaTls.certKey) -}}
{{- fail "secrets.kafkaTls.existingSecret is set but neither caKey nor certKey names a file in it" -}}
{{- end -}}
{{- if $secrets.kafkaTls.caKey -}}
{{- $_ := set $derived "ssl.ca.location" (printf "%s/ca.crt" $kafkaDir) -}}
{{- end -}}
{{- if and $secrets.kafkaTls.certKey (not $secrets.kafkaTls.keyKey) -}}
{{- fail "secrets.kafkaTls.certKey needs secrets.kafkaTls.keyKey: a client certificate is useless without its key" -}}
{{- end -}}
{{- if $secrets.kafkaTls.certKey -}}
{{- $_ := set $derived "ssl.certificate.location" (printf "%s/tls.crt" $kafkaDir) -}}
{{- $_ := set $derived "ssl.key.location" (printf "%s/tls.key" $kafkaDir) -}}
{{- end -}}
{{- if $secrets.kafkaTls.keyPasswordKey -}}
{{- $_ := set $derived "ssl.key.password_file" (printf "%s/key-password" $kafkaDir) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $derived -}}
{{- if and (hasKey $props $key) (ne (toString (get $props $key)) $value) -}}
{{- fail (printf "config.kafka.properties[%q] conflicts with the file mounted from secrets: remove it from config.kafka.properties" $key) -}}
{{- end -}}
{{- $_ := set $props $key $value -}}
{{- end -}}
{{- $_ := set $kafka "properties" $props -}}
{{- $_ := set $cfg "kafka" $kafka -}}
{{- if $secrets.target.existingSecret -}}
{{- $tokenPath := printf "%s/token" (include "pps.targetSecretDir" .) -}}
{{- $given := get $target "token_file" | default "" -}}
{{- if and $given (ne $given $tokenPath) -}}
{{- fail (printf "config.target.token_file (%s) conflicts with secrets.target.existingSecret, which mounts the token at %s: leave token_file empty" $given $tokenPath) -}}
{{- end -}}
{{- $_ := set $target "token_file" $tokenPath -}}
{{- $_ := set $cfg "target" $target -}}
{{- end -}}
{{- $delivery := get $cfg "delivery" | default dict -}}
{{- $retryInitial := get $delivery "retry_initial_ms" | default 100 | int64 -}}
{{- $retryMax := get $delivery "retry_max_ms" | default 30000 | int64 -}}
{{- if gt $retryInitial $retryMax -}}
{{- fail (printf "config.delivery.retry_initial_ms (%d) must be at most config.delivery.retry_max_ms (%d)" $retryInitial $retryMax) -}}
{{- end -}}
{{- $dlq := get $kafka "dlq_topic" | default "pos.purchases.dlq" -}}
{{- if has $dlq (get $kafka "topics" | default list) -}}
{{- fail (printf "config.kafka.dlq_topic (%s) must not be one of config.kafka.topics: dead letters would be consumed again" $dlq) -}}
{{- end -}}
{{- $drain := include "pps.drainTimeoutMs" . | int64 -}}
{{- $session := 45000 -}}
{{- if hasKey $props "session.timeout.ms" -}}
{{- $session = get $props "session.timeout.ms" | int64 -}}
{{- end -}}
{{- if ge $drain $session -}}
{{- fail (printf "config.delivery.drain_timeout_ms (%d) must be below the Kafka session timeout (session.timeout.ms = %d), or a draining pod is thrown out of the group" $drain $session) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
TOML rendering. Strings become TOML basic strings through toJson (JSON string
escapes are a subset of TOML's), numbers lose a ".0" unless the key is a
float setting, null values are left out so the service's default applies, and
nested maps become [section.sub] tables.
*/}}

{{/* Keys that are floats in the service's configuration, rendered with a decimal point. */}}
{{- define "pps.toml.floatKeys" -}}
per_second
fetch_per_second
sample_ratio
{{- end -}}

{{/* A key: bare when it only has letters, digits, '_' and '-', else quoted. */}}
{{- define "pps.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* A value. Argument: dict "value" V "float" BOOL. */}}
{{- define "pps.toml.value" -}}
{{- $v := .value -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if .float -}}
{{- if eq (float64 $v) (floor $v) -}}{{ printf "%.1f" $v }}{{- else -}}{{ printf "%v" $v }}{{- end -}}
{{- else if eq (float64 $v) (floor $v) -}}
{{- printf "%d" (int64 $v) -}}
{{- else -}}
{{- printf "%v" $v -}}
{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) (kindIs "uint32" $v) -}}
{{- if .float -}}{{ printf "%d.0" $v }}{{- else -}}{{ printf "%d" $v }}{{- end -}}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $item := $v -}}
{{- $items = append $items (include "pps.toml.value" (dict "value" $item "float" false)) -}}
{{- end -}}
[{{ join ", " $items }}]
{{- else if kindIs "map" $v -}}
{{- $items := list -}}
{{- range $key := keys $v | sortAlpha -}}
{{- $item := get $v $key -}}
{{- if not (kindIs "invalid" $item) -}}
{{- $items = append $items (printf "%s = %s" (include "pps.toml.key" $key) (include "pps.toml.value" (dict "value" $item "float" false))) -}}
{{- end -}}
{{- end -}}
{ {{- join ", " $items -}} }
{{- else -}}
{{- fail (printf "cannot render %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* A table and its sub-tables. Argument: dict "path" LIST "table" MAP "floatKeys" LIST. */}}
{{- define "pps.toml.table" -}}
{{- $path := .path -}}
{{- $table := .table -}}
{{- $floatKeys := .floatKeys -}}
{{- if $path }}
{{- $header := list -}}
{{- range $part := $path -}}
{{- $header = append $header (include "pps.toml.key" $part) -}}
{{- end }}
[{{ join "." $header }}]
{{- end -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value)) }}
{{ include "pps.toml.key" $key }} = {{ include "pps.toml.value" (dict "value" $value "float" (has $key $floatKeys)) }}
{{- end -}}
{{- end -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if kindIs "map" $value }}
{{ include "pps.toml.table" (dict "path" (append $path $key) "table" $value "floatKeys" $floatKeys) }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* config.toml, complete: sections in the order of the service's documentation, then any others. */}}
{{- define "pps.configToml" -}}
{{- $cfg := include "pps.effectiveConfig" . | fromYaml -}}
{{- $floatKeys := splitList "\n" (include "pps.toml.floatKeys" .) -}}
{{- $order := list "kafka" "target" "rate_limit" "delivery" "bulk" "existence" "verify" "mapping" "server" "log" -}}
{{- range $section := keys $cfg | sortAlpha -}}
{{- if not (has $section $order) -}}
{{- $order = append $order $section -}}
{{- end -}}
{{- end -}}
{{- $tables := list -}}
{{- range $section := $order -}}
{{- $table := get $cfg $section -}}
{{- if kindIs "map" $table -}}
{{- $tables = append $tables (include "pps.toml.table" (dict "path" (list $section) "table" $table "floatKeys" $floatKeys) | trim) -}}
{{- end -}}
{{- end -}}
# Rendered by the pos-profile-sync Helm chart from .Values.config; edit the values, not this file.

{{ join "\n\n" $tables }}
{{ end -}}

{{/* Mounts of the Secret files (the Deployment's pods and the config check's). */}}
{{- define "pps.secretVolumeMounts" -}}
{{- $secrets := .Values.secrets -}}
{{- $kafkaFiles := or $secrets.kafkaSasl.existingSecret $secrets.kafkaTls.existingSecret -}}
{{- if $secrets.target.existingSecret }}
- name: target-token
  mountPath: {{ include "pps.targetSecretDir" . }}
  readOnly: true
{{- end }}
{{- if $kafkaFiles }}
- name: kafka-secrets
  mountPath: {{ include "pps.kafkaSecretDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes of the Secret files, matching pps.secretVolumeMounts. */}}
{{- define "pps.secretVolumes" -}}
{{- $secrets := .Values.secrets -}}
{{- $kafkaTls := $secrets.kafkaTls -}}
{{- $kafkaFiles := or $secrets.kafkaSasl.existingSecret $kafkaTls.existingSecret -}}
{{- if $secrets.target.existingSecret }}
# Whole-directory Secret volume (no subPath), so a rotated token reaches the pod.
- name: target-token
  secret:
    secretName: {{ $secrets.target.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $secrets.target.tokenKey }}
        path: token
{{- end }}
{{- if $kafkaFiles }}
- name: kafka-secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if $secrets.kafkaSasl.existingSecret }}
      - secret:
          name: {{ $secrets.kafkaSasl.existingSecret }}
          items:
            - key: {{ $secrets.kafkaSasl.passwordKey }}
              path: sasl-password
      {{- end }}
      {{- if $kafkaTls.existingSecret }}
      - secret:
          name: {{ $kafkaTls.existingSecret }}
          items:
            {{- if $kafkaTls.caKey }}
            - key: {{ $kafkaTls.caKey }}
              path: ca.crt
            {{- end }}
            {{- if $kafkaTls.certKey }}
            - key: {{ $kafkaTls.certKey }}
              path: tls.crt
            - key: {{ $kafkaTls.keyKey }}
              path: tls.key
            {{- end }}
            {{- if $kafkaTls.keyPasswordKey }}
            - key: {{ $kafkaTls.keyPasswordKey }}
              path: key-password
            {{- end }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* Refuses an autoscaling maximum above the partition count. Argument: dict "root" $ "name" KEY "max" N. */}}
{{- define "pps.checkAutoscalerMax" -}}
{{- $partitions := .root.Values.kafka.partitions | default 0 | int64 -}}
{{- $max := .max | int64 -}}
{{- if eq $partitions 0 -}}
{{- fail (printf "%s is set but kafka.partitions is not: state the partition count of the consumed topics so that the chart can keep the maximum at or below it" .name) -}}
{{- end -}}
{{- if gt $max $partitions -}}
{{- fail (printf "%s (%d) exceeds kafka.partitions (%d): pods beyond %d would hold no partition, consume nothing and never become ready; lower it to %d or add partitions" .name $max $partitions $partitions $partitions) -}}
{{- end -}}
{{- end -}}
