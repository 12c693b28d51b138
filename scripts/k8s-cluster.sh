#!/usr/bin/env bash
# A throwaway Kubernetes control plane on loopback: etcd + kube-apiserver, no kubelet, no scheduler,
# no controller-manager. Enough for `helm install`, kubectl, CSI sidecars and client-node against a
# real API server (objects are validated, RBAC is enforced, CRDs are served).
#
#   scripts/k8s-cluster.sh start DIR   # start, wait for /readyz, write DIR/kubeconfig and DIR/env
#   scripts/k8s-cluster.sh env DIR     # print `export KUBECONFIG=...` (eval it)
#   scripts/k8s-cluster.sh stop DIR    # kill both processes, remove DIR
#
# K8S_CONTROLLER_MANAGER=1 also starts kube-controller-manager (PV binder, service accounts, garbage
# collector...; attach-detach and node-lifecycle off, since there is no kubelet), for tests that need
# claims to become Bound.
#
# scripts/cluster.sh (real kubelets) adds: K8S_SCHEDULER=1 (kube-scheduler), K8S_CM_CONTROLLERS (the
# controller-manager's --controllers, e.g. with attachdetach), K8S_APISERVER_ARGS (extra flags, e.g. how to
# reach kubelets), K8S_SERVICE_CIDR (default 10.0.0.0/24: no address of it is ever assigned or contacted).
#
# Credentials in DIR: ca.crt/key (self-signed), apiserver serving cert for 127.0.0.1, an admin client
# cert (O=system:masters) used by DIR/kubeconfig, a service-account signing key pair, and tokens.csv
# with static bearer tokens for non-admin test identities (see below).
# Binaries come from .cache/tools/bin (scripts/k8s-tools.sh builds them); override with K8S_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${K8S_BIN:-$ROOT/.cache/tools/bin}"

say() { printf '[k8s-cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# free_port: a TCP port nobody listens on right now (the kernel picks it).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

make_certs() {
  local d="$1/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=famfs-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat >server.ext <<'EOF'
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out apiserver.crt 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=famfs-admin" -keyout admin.key -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  # Static tokens: an identity with no rights at all (RBAC denial tests) and the chart's service accounts
  # are reachable by impersonation from the admin kubeconfig instead.
  printf '%s,famfs-nobody,famfs-nobody-uid,"famfs:test"\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$1/tokens.csv"
}

wait_ready() {
  local url="$1" dir="$2" deadline=$((SECONDS + ${K8S_START_TIMEOUT:-90}))
  while [ $SECONDS -lt $deadline ]; do
    if command -v curl >/dev/null; then
      curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
        "$url/readyz" >/dev/null 2>&1 && return 0
    elif [ -x "$BIN/kubectl" ]; then
      "$BIN/kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=2s get --raw /readyz >/dev/null 2>&1 && return 0
    fi
    for p in etcd apiserver; do
      if [ -f "$dir/$p.pid" ] && ! kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null; then
        tail -n 30 "$dir/$p.log" >&2
        die "$p exited during startup (log: $dir/$p.log)"
      fi
    done
    sleep 0.3
  done
  tail -n 30 "$dir/apiserver.log" >&2
  die "kube-apiserver not ready after ${K8S_START_TIMEOUT:-90}s"
}

write_kubeconfig() {
  local dir="$1" url="$2"
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: famfs-test
    cluster:
      server: $url
      certificate-authority: $dir/pki/ca.crt
users:
  - name: famfs-admin
    user:
      client-certificate: $dir/pki/admin.crt
      client-key: $dir/pki/admin.key
contexts:
  - name: famfs-test
    context: { cluster: famfs-test, user: famfs-admin, namespace: default }
current-context: famfs-test
EOF
}

start() {
  local dir="$1"
  for b in etcd kube-apiserver; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run scripts/k8s-tools.sh first"
  done
  command -v openssl >/dev/null || die "openssl missing"
  [ -e "$dir/apiserver.pid" ] && die "$dir already holds a cluster (stop it first)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local t0=$SECONDS
  make_certs "$dir"

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)

  # setsid: the servers outlive this script; `stop` ends them by their recorded pids.
  setsid "$BIN/etcd" --name famfs-test --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "famfs-test=http://127.0.0.1:$peer_port" \
    --log-level warn \
    --unsafe-no-fsync --quota-backend-bytes=$((1024 * 1024 * 1024)) \
    >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"

  setsid "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$dir/pki" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --token-auth-file="$dir/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="${K8S_SERVICE_CIDR:-10.0.0.0/24}" \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --profiling=false \
    --v=1 \
    ${K8S_APISERVER_ARGS:-} \
    >"$dir/apiserver.log" 2>&1 </dev/null &
  echo $! >"$dir/apiserver.pid"

  local url="https://127.0.0.1:$api_port"
  write_kubeconfig "$dir" "$url"
  wait_ready "$url" "$dir"

  if [ "${K8S_CONTROLLER_MANAGER:-0}" = 1 ]; then
    [ -x "$BIN/kube-controller-manager" ] || die "$BIN/kube-controller-manager missing: run scripts/k8s-tools.sh kube"
    setsid "$BIN/kube-controller-manager" \
      --kubeconfig="$dir/kubeconfig" \
      --leader-elect=false \
      --secure-port=0 \
      --controllers="${K8S_CM_CONTROLLERS:-*,-attachdetach,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller}" \
      --service-account-private-key-file="$dir/pki/sa.key" \
      --root-ca-file="$dir/pki/ca.crt" \
      --use-service-account-credentials=false \
      --v=1 \
      >"$dir/controller-manager.log" 2>&1 </dev/null &
    echo $! >"$dir/controller-manager.pid"
  fi

  if [ "${K8S_SCHEDULER:-0}" = 1 ]; then
    [ -x "$BIN/kube-scheduler" ] || die "$BIN/kube-scheduler missing: run scripts/k8s-tools.sh node"
    setsid "$BIN/kube-scheduler" \
      --kubeconfig="$dir/kubeconfig" \
      --leader-elect=false \
      --secure-port=0 \
      --v=1 \
      >"$dir/scheduler.log" 2>&1 </dev/null &
    echo $! >"$dir/scheduler.pid"
  fi

  cat >"$dir/env" <<EOF
export KUBECONFIG=$dir/kubeconfig
export FAMFS_K8S_API=$url
export FAMFS_K8S_ETCD=http://127.0.0.1:$etcd_port
export FAMFS_K8S_NOBODY_TOKEN=$(cut -d, -f1 "$dir/tokens.csv")
EOF
  say "ready in $((SECONDS - t0))s: $url (etcd 127.0.0.1:$etcd_port); KUBECONFIG=$dir/kubeconfig"
}

# kill_pids PIDFILE... : SIGKILL and reap. The cluster is throwaway (its directory is deleted next),
# so there is nothing to shut down gracefully, and a graceful apiserver+etcd stop costs ~5 s.
# alive PID: running and not a zombie (a container's pid 1 may be slow to reap our orphans).
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]
}

kill_pids() {
  local pids=() f pid
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); rm -f "$f"
    alive "$pid" && pids+=("$pid")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -KILL "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    local n=0
    for pid in "${pids[@]}"; do alive "$pid" && n=1; done
    [ $n -eq 0 ] && return 0
    sleep 0.1
  done
  say "warning: pids ${pids[*]} still alive after SIGKILL"
}

stop() {
  local dir="$1"
  [ -d "$dir" ] || { say "$dir: nothing to stop"; return 0; }
  kill_pids "$dir/scheduler.pid" "$dir/controller-manager.pid" "$dir/apiserver.pid" "$dir/etcd.pid"
  rm -rf "$dir"
  say "stopped, removed $dir"
}

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
case "$cmd" in
  start) start "$dir" ;;
  stop) stop "$dir" ;;
  env) [ -f "$dir/env" ] || die "$dir/env missing (cluster not started?)"; cat "$dir/env" ;;
  *) echo "usage: $0 start|stop|env DIR" >&2; exit 2 ;;
esac
