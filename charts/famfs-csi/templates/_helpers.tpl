{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "famfs-csi.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix for every object name: the release name, plus the chart name unless the release already says it. */}}
{{- define "famfs-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "famfs-csi.labels" -}}
app.kubernetes.io/name: {{ include "famfs-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels for one component (controller or node); pass (dict "root" $ "component" "x"). */}}
{{- define "famfs-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "famfs-csi.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "famfs-csi.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{/* Where the kubelet finds the node plugin's socket (host path). */}}
{{- define "famfs-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* The FUSE server's mount point and control socket for the pool: the paths the node plugin
     (pkg/fuse/supervisor.ts) looks for, <stateDir>/mnt/<pool> and <stateDir>/fused/<pool>/sock. */}}
{{- define "famfs-csi.fuseMountpoint" -}}
{{- printf "%s/mnt/%s" (trimSuffix "/" .Values.pool.stateDir) .Values.pool.name -}}
{{- end -}}

{{- define "famfs-csi.fuseControlSocket" -}}
{{- printf "%s/fused/%s/sock" (trimSuffix "/" .Values.pool.stateDir) .Values.pool.name -}}
{{- end -}}

{{/* The node plugin's fd deposit socket, next to the control socket (pkg/fuse/deposit.ts depositSocketFor). */}}
{{- define "famfs-csi.fuseFdDeposit" -}}
{{- printf "%s/fused/%s/fd-deposit" (trimSuffix "/" .Values.pool.stateDir) .Values.pool.name -}}
{{- end -}}

{{- define "famfs-csi.controllerServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.controller }}{{- else -}}{{ .Values.serviceAccount.controller | default "default" }}{{- end -}}
{{- end -}}

{{- define "famfs-csi.nodeServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.node }}{{- else -}}{{ .Values.serviceAccount.node | default "default" }}{{- end -}}
{{- end -}}

{{/* CRD group of the FamfsPool resource. */}}
{{- define "famfs-csi.crdGroup" -}}famfs.csi.cxl.io{{- end -}}

{{/* Address an HTTP endpoint binds to: every address, or the pod's IP with hostNetwork (several
     pods of this chart may share one host network; the kubelet probes the pod IP). Pass (dict "root" $ "port" N). */}}
{{- define "famfs-csi.httpAddress" -}}
{{- if .root.Values.hostNetwork -}}$(POD_IP):{{ .port }}{{- else -}}:{{ .port }}{{- end -}}
{{- end -}}

{{/* Pod-level network settings (hostNetwork and the DNS policy that goes with it). */}}
{{- define "famfs-csi.podNetwork" -}}
{{- if .Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end -}}

{{/* Environment for containers that talk to the Kubernetes API: POD_IP (for httpAddress) and, with
     .Values.kubeApiServer, where the API is (in-cluster clients read these two variables). */}}
{{- define "famfs-csi.apiEnv" -}}
- name: POD_IP
  valueFrom: { fieldRef: { fieldPath: status.podIP } }
{{- with .Values.kubeApiServer }}
{{- $port := regexFind "[0-9]+$" . }}
{{- if not $port }}{{ fail (printf "kubeApiServer %q: expected host:port" .) }}{{ end }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ trimSuffix (printf ":%s" $port) . | trimPrefix "[" | trimSuffix "]" | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $port | quote }}
{{- end }}
{{- end -}}

{{/* True when pool.device is a file the /dev hostPath does not bring into the container: an emulation
     file outside /dev, or one in /dev/shm, which the container runtime covers with the pod's own shm. */}}
{{- define "famfs-csi.deviceNeedsOwnMount" -}}
{{- if or (not (hasPrefix "/dev/" .Values.pool.device)) (hasPrefix "/dev/shm/" .Values.pool.device) -}}true{{- end -}}
{{- end -}}

{{- define "famfs-csi.deviceMount" -}}
{{- if include "famfs-csi.deviceNeedsOwnMount" . }}
- name: pool-device
  mountPath: {{ .Values.pool.device }}
{{- end }}
{{- end -}}

{{- define "famfs-csi.deviceVolume" -}}
{{- if include "famfs-csi.deviceNeedsOwnMount" . }}
# An emulated device (a file): mounted by itself, so every container maps the host's file.
- name: pool-device
  hostPath:
    path: {{ .Values.pool.device }}
    type: File
{{- end }}
{{- end -}}
