#!/usr/bin/env bash
# Build and cache the Kubernetes tools the e2e tests need, each only when missing:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm, csi-provisioner, csi-attacher
# into .cache/tools/bin (git-ignored). None of these are downloadable as binaries here, so every one is
# compiled from Go modules. Several refuse `go install pkg@tag` because their go.mod carries replace
# directives; for those we generate a throwaway wrapper module under .cache/k8s-wrappers/<tool> that
# requires the upstream module and repeats the replace pins (Go ignores replaces of dependencies).
#
# Usage: scripts/k8s-tools.sh [all|etcd|kube|helm|sidecars|check]...   (default: all)
#   FAMFS_K8S_TOOLS_FORCE=1  rebuild even if present
# Logs: .cache/logs/k8s-tools-<tool>.log ; timings appended to .cache/logs/k8s-tools-times.txt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/tools/bin"
LOGS="$CACHE/logs"
WRAP="$CACHE/k8s-wrappers"
mkdir -p "$BIN" "$LOGS" "$WRAP"

# Same Go cache layout as scripts/tools.sh, so module downloads and compiled packages are shared.
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS="-modcacherw -buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
PROVISIONER_VERSION="${PROVISIONER_VERSION:-v6.4.0}"
ATTACHER_VERSION="${ATTACHER_VERSION:-v4.13.0}"

say() { printf '[k8s-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

have() { [ -x "$BIN/$1" ] && [ -z "${FAMFS_K8S_TOOLS_FORCE:-}" ]; }

# timed NAME CMD... : run a build step with its output in a log, record the wall time and binary sizes.
timed() {
  local name="$1"; shift
  local log="$LOGS/k8s-tools-$name.log"
  local t0; t0=$(date +%s)
  say "building $name (log: ${log#"$ROOT"/})"
  if ! "$@" >"$log" 2>&1; then
    say "FAILED $name after $(( $(date +%s) - t0 ))s; last lines of the log:"
    tail -n 30 "$log" >&2
    return 1
  fi
  local dt=$(( $(date +%s) - t0 ))
  say "built $name in ${dt}s"
  printf '%s\t%s\t%ss\n' "$(date -Is)" "$name" "$dt" >>"$LOGS/k8s-tools-times.txt"
}

# new_wrapper DIR : an empty module to require upstream modules into.
new_wrapper() {
  local dir="$1"
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'module famfs-csi.local/k8s-wrapper\n\ngo 1.26.0\n' >"$dir/go.mod"
}

# gomod_of MODULE VERSION : path of that module's go.mod in the module cache (downloads it).
gomod_of() {
  (cd "$WRAP" && go mod download -json "$1@$2") | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p'
}

# copy_replaces GOMOD DIR : repeat every `replace X => Y vN` whose target is a module version (not a path).
copy_replaces() {
  local gomod="$1" dir="$2"
  awk '
    /^replace[[:space:]]*\($/ { inblock=1; next }
    inblock && /^\)/ { inblock=0; next }
    inblock { print; next }
    /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); print }
  ' "$gomod" | awk '$2=="=>" && NF==4 && $3 !~ /^\./ { print "replace " $1 " => " $3 " " $4 }' >>"$dir/go.mod"
}

build_etcd() {
  have etcd && { say "etcd present"; return 0; }
  local dir="$WRAP/etcd"
  new_wrapper "$dir"
  # etcd's own go.mod points api/client/pkg at ../ paths; in a wrapper they resolve to the tagged modules.
  (cd "$dir" &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
    go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kube() {
  if have kube-apiserver && have kubectl && have kube-controller-manager; then say "kube binaries present"; return 0; fi
  local dir="$WRAP/kubernetes"
  new_wrapper "$dir"
  local gomod; gomod=$(gomod_of k8s.io/kubernetes "$K8S_VERSION")
  # k8s.io/kubernetes requires its ~33 staging modules at v0.0.0 and resolves them with ./staging replaces;
  # point each at the published staging tag v0.<minor>.<patch> instead.
  local staging="v0.${K8S_VERSION#v1.}"
  awk '$2=="=>" && $3 ~ /^\.\/staging\// { print "replace " $1 " => " $1 " '"$staging"'" }' "$gomod" >>"$dir/go.mod"
  local minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld="$ld -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$dir" &&
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" &&
    go build -ldflags "$ld" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kube-controller-manager)
}

build_helm() {
  have helm && { say "helm present"; return 0; }
  # helm v3 has no replace directives: plain go install works.
  GOBIN="$BIN" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# build_sidecar NAME MODULE VERSION CMDPKG
build_sidecar() {
  local name="$1" module="$2" version="$3" pkg="$4"
  have "$name" && { say "$name present"; return 0; }
  local dir="$WRAP/$name"
  new_wrapper "$dir"
  local gomod; gomod=$(gomod_of "$module" "$version")
  copy_replaces "$gomod" "$dir"
  (cd "$dir" &&
    go get "$pkg@$version" &&
    go build -ldflags "-s -w -X main.version=$version" -o "$BIN/$name" "$pkg")
}

build_sidecars() {
  timed csi-provisioner build_sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 \
    "$PROVISIONER_VERSION" github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
  timed csi-attacher build_sidecar csi-attacher github.com/kubernetes-csi/external-attacher/v4 \
    "$ATTACHER_VERSION" github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher
}

check() {
  local ok=0 t
  for t in etcd kube-apiserver kube-controller-manager kubectl helm csi-provisioner csi-attacher; do
    if [ ! -x "$BIN/$t" ]; then say "MISSING $t"; ok=1; continue; fi
    local v
    case "$t" in
      etcd) v=$("$BIN/$t" --version 2>&1 | sed -n 1p) ;;
      kube-apiserver|kube-controller-manager) v=$("$BIN/$t" --version 2>&1 | sed -n 1p) ;;
      kubectl) v=$("$BIN/$t" version --client 2>&1 | sed -n 1p) ;;
      helm) v=$("$BIN/$t" version --short 2>&1 | sed -n 1p) ;;
      *) v=$("$BIN/$t" --version 2>&1 | sed -n 1p) ;;
    esac
    say "$(printf '%-16s %6s  %s' "$t" "$(du -h "$BIN/$t" | cut -f1)" "$v")"
  done
  return $ok
}

main() {
  local targets=("$@")
  [ ${#targets[@]} -eq 0 ] && targets=(all)
  local t0; t0=$(date +%s)
  for t in "${targets[@]}"; do
    case "$t" in
      all)
        have helm || timed helm build_helm
        have etcd || timed etcd build_etcd
        { have kube-apiserver && have kubectl && have kube-controller-manager; } || timed kube build_kube
        build_sidecars
        check ;;
      etcd) have etcd || timed etcd build_etcd ;;
      kube) { have kube-apiserver && have kubectl && have kube-controller-manager; } || timed kube build_kube ;;
      helm) have helm || timed helm build_helm ;;
      sidecars) build_sidecars ;;
      check) check ;;
      *) echo "unknown target: $t" >&2; exit 2 ;;
    esac
  done
  say "done in $(( $(date +%s) - t0 ))s"
}

main "$@"
