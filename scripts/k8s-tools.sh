#!/usr/bin/env bash
# Build and cache the Kubernetes tools the e2e tests need, each only when missing:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm, csi-provisioner, csi-attacher,
#   csi-snapshotter, and for the real-node cluster (scripts/cluster.sh) kubelet and kube-scheduler
# into .cache/tools/bin (git-ignored). None of these are downloadable as binaries here, so every one is
# compiled from Go modules. Several refuse `go install pkg@tag` because their go.mod carries replace
# directives; for those we generate a throwaway wrapper module under .cache/k8s-wrappers/<tool> that
# requires the upstream module and repeats the replace pins (Go ignores replaces of dependencies).
#
# Each build holds a lock (.cache/locks/<name>.lock) so two engineers or two `npm test` runs sharing one
# .cache never build (and rm -rf the wrapper of) the same tool at once; the second waits, then finds it.
#
# Usage: scripts/k8s-tools.sh [all|etcd|kube|node|helm|sidecars|check]...   (default: all)
#   node = kubelet + kube-scheduler (same k8s.io/kubernetes version as kube-apiserver)
#   FAMFS_K8S_TOOLS_FORCE=1  rebuild even if present
# Logs: .cache/logs/k8s-tools-<tool>.log ; timings appended to .cache/logs/k8s-tools-times.txt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/tools/bin"
LOGS="$CACHE/logs"
WRAP="$CACHE/k8s-wrappers"
LOCKS="$CACHE/locks"
mkdir -p "$BIN" "$LOGS" "$WRAP" "$LOCKS"

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
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.4.0}"

say() { printf '[k8s-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

have() { [ -x "$BIN/$1" ] && [ -z "${FAMFS_K8S_TOOLS_FORCE:-}" ]; }

# timed NAME CMD... : run a build step with its output in a log, record the wall time and binary sizes.
timed() {
  local name="$1"; shift
  local log="$LOGS/k8s-tools-$name.log"
  local lockfd
  exec {lockfd}>"$LOCKS/$name.lock"
  if ! flock -n "$lockfd"; then
    say "waiting for a concurrent build of $name"
    flock "$lockfd"
  fi
  local t0; t0=$(date +%s)
  say "building $name (log: ${log#"$ROOT"/})"
  if ! "$@" >"$log" 2>&1; then
    exec {lockfd}>&-
    say "FAILED $name after $(( $(date +%s) - t0 ))s; last lines of the log:"
    tail -n 30 "$log" >&2
    return 1
  fi
  exec {lockfd}>&-
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

# kube_wrapper DIR : a wrapper module for k8s.io/kubernetes at $K8S_VERSION with its staging replaces.
kube_wrapper() {
  local dir="$1"
  new_wrapper "$dir"
  local gomod; gomod=$(gomod_of k8s.io/kubernetes "$K8S_VERSION")
  # k8s.io/kubernetes requires its ~33 staging modules at v0.0.0 and resolves them with ./staging replaces;
  # point each at the published staging tag v0.<minor>.<patch> instead.
  local staging="v0.${K8S_VERSION#v1.}"
  awk '$2=="=>" && $3 ~ /^\.\/staging\// { print "replace " $1 " => " $1 " '"$staging"'" }' "$gomod" >>"$dir/go.mod"
}

kube_ldflags() {
  local minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld="$ld -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  printf '%s' "$ld"
}

build_kube() {
  if have kube-apiserver && have kubectl && have kube-controller-manager; then say "kube binaries present"; return 0; fi
  local dir="$WRAP/kubernetes"
  kube_wrapper "$dir"
  local ld; ld=$(kube_ldflags)
  (cd "$dir" &&
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" &&
    go build -ldflags "$ld" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kube-controller-manager)
}

# kubelet and kube-scheduler: the same module version as kube-apiserver, in a wrapper of their own so this
# build never races the one above. The kubelet is static (CGO_ENABLED=0) like the rest.
build_kube_node() {
  if have kubelet && have kube-scheduler; then say "kubelet and kube-scheduler present"; return 0; fi
  local dir="$WRAP/kubernetes-node"
  kube_wrapper "$dir"
  local ld; ld=$(kube_ldflags)
  (cd "$dir" &&
    go get "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" &&
    go build -ldflags "$ld" -o "$BIN/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler)
}

build_helm() {
  have helm && { say "helm present"; return 0; }
  # helm v3 has no replace directives: plain go install works.
  GOBIN="$BIN" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# build_sidecar NAME MODULE VERSION CMDPKG [MODULE@VERSION...]
# The optional MODULE@VERSION pins are for sub-modules the sidecar's own go.mod takes from a path
# (`replace X => ./client`), which a wrapper cannot follow: they are pinned to the same release.
build_sidecar() {
  local name="$1" module="$2" version="$3" pkg="$4"
  shift 4
  have "$name" && { say "$name present"; return 0; }
  local dir="$WRAP/$name"
  new_wrapper "$dir"
  local gomod; gomod=$(gomod_of "$module" "$version")
  copy_replaces "$gomod" "$dir"
  (cd "$dir" &&
    go get "$pkg@$version" "$@" &&
    go build -ldflags "-s -w -X main.version=$version" -o "$BIN/$name" "$pkg")
}

build_sidecars() {
  timed csi-provisioner build_sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 \
    "$PROVISIONER_VERSION" github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
  timed csi-attacher build_sidecar csi-attacher github.com/kubernetes-csi/external-attacher/v4 \
    "$ATTACHER_VERSION" github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher
  # external-snapshotter takes its client module from ./client; unpinned, the newest client is chosen,
  # which needs a newer client-go than the sidecar's (undefined: cache.ToListWatcherWithWatchListSemantics).
  timed csi-snapshotter build_sidecar csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 \
    "$SNAPSHOTTER_VERSION" github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION"
}

check() {
  local ok=0 t
  local tools=(etcd kube-apiserver kube-controller-manager kubectl helm csi-provisioner csi-attacher csi-snapshotter)
  [ -n "${WITH_NODE:-}" ] && tools+=(kubelet kube-scheduler)
  for t in "${tools[@]}"; do
    if [ ! -x "$BIN/$t" ]; then say "MISSING $t"; ok=1; continue; fi
    local v
    case "$t" in
      etcd) v=$("$BIN/$t" --version 2>&1 | sed -n 1p) ;;
      kube-apiserver|kube-controller-manager|kubelet|kube-scheduler) v=$("$BIN/$t" --version 2>&1 | sed -n 1p) ;;
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
        { have kubelet && have kube-scheduler; } || timed kube-node build_kube_node
        build_sidecars
        WITH_NODE=1 check ;;
      etcd) have etcd || timed etcd build_etcd ;;
      kube) { have kube-apiserver && have kubectl && have kube-controller-manager; } || timed kube build_kube ;;
      node) { have kubelet && have kube-scheduler; } || timed kube-node build_kube_node; WITH_NODE=1 ;;
      helm) have helm || timed helm build_helm ;;
      sidecars) build_sidecars ;;
      check) check ;;
      *) echo "unknown target: $t" >&2; exit 2 ;;
    esac
  done
  say "done in $(( $(date +%s) - t0 ))s"
}

main "$@"
