#!/usr/bin/env bash
# A local Kubernetes cluster with real kubelets on this one machine, running famfs-csi from its chart.
#
#   npm run cluster -- up [--nodes N] [--dir DIR]   (default 2 nodes, DIR .cache/cluster)
#   npm run cluster -- down [--dir DIR]
#   npm run cluster -- env [--dir DIR]              (the lines of DIR/env)
#
# What runs: etcd, kube-apiserver, kube-controller-manager (with the attach/detach controller: serial
# sharing goes through VolumeAttachments) and kube-scheduler on 127.0.0.1 (scripts/k8s-cluster.sh), and
# N nodes. A node is a private mount namespace holding its own containerd (root, state, socket) and
# kubelet (root dir, cgroup root, ports on its own loopback address 127.X.Y.n, which is also its name),
# with its own famfs host identity (/opt/famfs/system_uuid). Inside every node the same paths
# (DIR/mnt/kubelet, DIR/mnt/state) are bind mounts of that node's directories, so one chart value fits all
# nodes, as /var/lib/kubelet does on real machines. All nodes share ONE emulated famfs device file in
# /dev/shm, the stand-in for CXL memory that several hosts see.
#
# Pods get no network of their own (no address outside 127.0.0.0/8 is ever used): the CNI configuration
# has only the loopback plugin, which makes the node Ready, and every pod runs with hostNetwork.
# Images are built here (scripts/cluster-images.sh), imported once into a staging containerd, and each
# node's containerd root starts as a hard-linked copy of its root.
# `down` kills every process of the cluster, removes its cgroups, the device file and DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${K8S_BIN:-$ROOT/.cache/tools/bin}"
NAMESPACE=famfs-system
RELEASE=famfs-csi
POOL=pool0
CGROUP_HIERARCHIES=(pids systemd memory cpu cpuacct cpuset blkio devices freezer unified)

say() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: npm run cluster -- up [--nodes N] [--dir DIR]
       npm run cluster -- down [--dir DIR]
       npm run cluster -- env [--dir DIR]
EOF
  exit 2
}


# kubectl's discovery cache in DIR (gone with it): one per API server port would pile up in ~/.kube/cache.
kubectl() { KUBECACHEDIR="$DIR/kube-cache" "$BIN/kubectl" --kubeconfig "$DIR/control/kubeconfig" "$@"; }
helm() { KUBECONFIG="$DIR/control/kubeconfig" "$BIN/helm" "$@"; }

# --- node ---------------------------------------------------------------------------------------------
# node_run DIR NAME: runs INSIDE the node's mount namespace (unshare, see start_node): bind mounts, then
# containerd and the kubelet as children; waits for them.
node_run() {
  local n="$DIR/nodes/$NODE"
  # Everything this node's processes write to /run and /var/log (shim sockets, pod logs, netns) stays in
  # this namespace and disappears with it.
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=0755 tmpfs /var/log
  mount --bind "$n/kubelet" "$DIR/mnt/kubelet"
  mount --make-rshared "$DIR/mnt/kubelet"
  mount --bind "$n/state" "$DIR/mnt/state"
  mount --make-rshared "$DIR/mnt/state"
  mount --bind "$n/opt-famfs" /opt/famfs
  containerd --config "$n/containerd.toml" >"$n/containerd.log" 2>&1 &
  echo $! >"$n/containerd.pid"
  local i
  for i in $(seq 1 200); do [ -S "$n/containerd/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$n/containerd/containerd.sock" ] || { echo "containerd did not start" >&2; exit 1; }
  "$BIN/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$DIR/control/kubeconfig" \
    --hostname-override "$NODE" --node-labels "$NODE_LABELS" --root-dir "$DIR/mnt/kubelet" --cert-dir "$n/kubelet-pki" \
    --v=1 >"$n/kubelet.log" 2>&1 &
  echo $! >"$n/kubelet.pid"
  wait
}

write_node_files() {
  local name="$1" idx="$2" n="$DIR/nodes/$1"
  mkdir -p "$n/kubelet" "$n/state" "$n/opt-famfs" "$n/containerd" "$n/cni" "$n/kubelet-pki" "$n/volume-plugins"
  node -e 'console.log(require("crypto").randomUUID())' >"$n/opt-famfs/system_uuid"
  cat >"$n/cni/10-loopback.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "loopback-only", "plugins": [ { "type": "loopback" } ] }
EOF
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$n/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # No CAP_SYS_RESOURCE here: the negative oom_score_adj the kubelet asks for would make runc fail.
    restrict_oom_score_adj = true
    stream_server_address = "$name"
    stream_server_port = "0"
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$n/cni"
EOF
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 with the cgroupfs driver (no systemd here); the kubelet refuses v1 unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CLUSTER_ID-$idx
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
imageServiceEndpoint: unix://$n/containerd/containerd.sock
address: $name
port: 10250
readOnlyPort: 0
healthzBindAddress: $name
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: $DIR/control/pki/ca.crt }
authorization:
  mode: AlwaysAllow
volumePluginDir: $n/volume-plugins
podLogsDir: /var/log/pods
resolvConf: /etc/resolv.conf
failSwapOn: false
serializeImagePulls: false
syncFrequency: 10s
# A pod's volume is mounted only after the kubelet has reported it in node.status.volumesInUse, and the
# attach/detach controller detaches only after the kubelet reported it unused: both wait for the next node
# status update (default every 10 s, the largest part of every pod start and serial hand-off here). The
# status is still patched only when it changed (nodeStatusReportFrequency otherwise).
nodeStatusUpdateFrequency: 1s
nodeStatusReportFrequency: 1m
fileCheckFrequency: 10s
maxPods: 40
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
evictionPressureTransitionPeriod: 10s
shutdownGracePeriod: 0s
EOF
}

make_cgroups() {
  local cg="/$CLUSTER_ID-$1" h
  for h in "${CGROUP_HIERARCHIES[@]}"; do
    [ -d "/sys/fs/cgroup/$h" ] || continue
    mkdir -p "/sys/fs/cgroup/$h$cg"
    if [ "$h" = cpuset ]; then
      cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$cg/cpuset.cpus"
      cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$cg/cpuset.mems"
    fi
  done
}

start_node() {
  local name="$1" idx="$2" labels="$3"
  write_node_files "$name" "$idx"
  make_cgroups "$idx"
  seed_node_root "$name"
  DIR="$DIR" NODE="$name" NODE_LABELS="$labels" setsid unshare --mount --propagation slave -- "$0" __node "$DIR" "$name" \
    >"$DIR/nodes/$name/node.log" 2>&1 </dev/null &
  echo $! >"$DIR/nodes/$name/holder.pid"
  local i
  for i in $(seq 1 200); do [ -S "$DIR/nodes/$name/containerd/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$DIR/nodes/$name/containerd/containerd.sock" ] || { cat "$DIR/nodes/$name/node.log" "$DIR/nodes/$name/containerd.log" >&2 || true; die "containerd of $name did not start"; }
}

# stage_images: every image of DIR/images.txt imported ONCE, into a staging containerd whose root is on the
# nodes' tmpfs (DIR/nodes/staging); each node's containerd root then starts as a hard-linked copy of it
# (seed_node_root). Importing into every node's containerd did the same hashing and unpacking (~1 GiB) once
# per node: the largest part of `up`. The staging root itself starts from a copy kept in .cache/cluster-staging
# (keyed by the images; the famfs-csi image by its bottom layer, the same for every build of the code): an
# import then only writes and unpacks what is new, the famfs-csi image's top layer.
stage_images() {
  local s="$DIR/nodes/staging" archive image i key tpl lockfd
  mkdir -p "$s" "$ROOT/.cache/cluster-staging" "$ROOT/.cache/locks"
  key=$(while read -r archive image; do
      if [ "$image" = "$FAMFS_IMAGE" ] && [ -f "$archive.base" ]; then echo "$image base $(cat "$archive.base")"
      else echo "$image $(stat -c '%s %Y' "$archive")"; fi
    done <"$DIR/images.txt" | sha256sum | cut -c1-16)
  tpl="$ROOT/.cache/cluster-staging/$key"
  exec {lockfd}>"$ROOT/.cache/locks/cluster-staging.lock"
  flock -s "$lockfd"
  if [ -f "$tpl/.complete" ]; then
    cp -a "$tpl/root" "$s/root"
    touch "$tpl"
  fi
  flock -u "$lockfd"
  cat >"$s/containerd.toml" <<EOF
version = 2
root = "$s/root"
state = "$s/state"
# Importing and unpacking needs the content store, the metadata and the overlay snapshotter only.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$s/containerd.sock"
[ttrpc]
  address = "$s/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$s/opt"
EOF
  containerd --config "$s/containerd.toml" >"$s/containerd.log" 2>&1 </dev/null &
  echo $! >"$s/containerd.pid"
  for i in $(seq 1 200); do [ -S "$s/containerd.sock" ] && break; sleep 0.05; done
  [ -S "$s/containerd.sock" ] || { cat "$s/containerd.log" >&2; die "the staging containerd did not start"; }
  # Every image, also those the copy holds: content already there is neither written nor unpacked again.
  while read -r archive image; do
    ctr --address "$s/containerd.sock" -n k8s.io images import "$archive" >"$s/import.log" 2>&1 ||
      { cat "$s/import.log" >&2; die "ctr images import $archive failed"; }
    case "$image" in "$FAMFS_IMAGE")
      # A second tag of the same image: what `helm upgrade` to a new image tag switches to.
      ctr --address "$s/containerd.sock" -n k8s.io images tag --force "$FAMFS_IMAGE" "$FAMFS_IMAGE_NEXT" >/dev/null ;;
    esac
  done <"$DIR/images.txt"
  # Stopped before its root is copied: its databases closed and complete.
  local pid; pid=$(cat "$s/containerd.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$s/containerd.pid"
  if [ ! -f "$tpl/.complete" ]; then
    flock "$lockfd"
    if [ ! -f "$tpl/.complete" ]; then
      rm -rf "$tpl"
      mkdir -p "$tpl"
      cp -a "$s/root" "$tpl/root"
      touch "$tpl/.complete" "$tpl"
      # The two copies used last stay (~1 GiB each); older ones go.
      ls -1dt "$ROOT/.cache/cluster-staging"/*/ 2>/dev/null | tail -n +3 | while read -r old; do rm -rf "$old"; done
    fi
    flock -u "$lockfd"
  fi
  exec {lockfd}>&-
}

# seed_node_root NAME: the node's containerd root, a copy of the staging root: content blobs and unpacked
# layers hard-linked (never written: containers write to upper directories of their own), every database
# and other file a real copy (each containerd writes its own).
seed_node_root() {
  local r="$DIR/nodes/$1/containerd/root" f
  [ ! -e "$r" ] || die "$r exists already"
  cp -al "$DIR/nodes/staging/root" "$r"
  while IFS= read -r -d '' f; do
    cp -p "$f" "$f.copy" && mv -f "$f.copy" "$f"
  done < <(find "$r" -type f ! -path '*/io.containerd.content.v1.content/blobs/*' ! -path '*/io.containerd.snapshotter.v1.overlayfs/snapshots/*' -print0)
}

# --- up -----------------------------------------------------------------------------------------------
pick_subnet() {
  # 127.X.Y.0/24 with nothing listening on it yet: several clusters (tests, a user's) can run side by side.
  local x y
  for _ in $(seq 1 50); do
    x=$((RANDOM % 200 + 20)); y=$((RANDOM % 250 + 1))
    if ! ss -Htln 2>/dev/null | awk '{print $4}' | grep -q "^127\.$x\.$y\."; then echo "127.$x.$y"; return 0; fi
  done
  die "no free 127.X.Y.0/24 found"
}

up() {
  [ -e "$DIR/env" ] && die "$DIR already holds a cluster: npm run cluster -- down${DIR_ARG:+ --dir $DIR}"
  [ "$NODES" -ge 1 ] && [ "$NODES" -le 8 ] || die "--nodes must be 1..8"
  [ "$(id -u)" = 0 ] || die "needs root (mount namespaces, cgroups, containerd)"
  local t0=$SECONDS
  # Seconds per phase, in DIR/times (the real-node tier prints them: a cold .cache shows in tools and images).
  local tp=$SECONDS times=()
  phase() { times+=("$1 $((SECONDS - tp))s"); tp=$SECONDS; }
  "$ROOT/scripts/deps.sh" cluster
  phase packages
  # FAMFS_CLUSTER_NO_BUILD=1: use what .cache holds (no tool or image build; e.g. while another build runs).
  if [ -z "${FAMFS_CLUSTER_NO_BUILD:-}" ]; then
    "$ROOT/scripts/k8s-tools.sh" etcd kube node helm sidecars >&2 || die "building the Kubernetes tools failed"
  fi
  phase tools
  mkdir -p "$DIR/mnt/kubelet" "$DIR/mnt/state" "$DIR/nodes"
  DIR="$(cd "$DIR" && pwd)"
  # The nodes' containerd roots (every image unpacked once, ~1 GiB, hard-linked into each node's root) and
  # kubelet dirs live in memory: on a disk file system, importing them took tens of seconds and deleting
  # them at `down` over a minute (discard on delete). The size is a cap, not a reservation.
  mount -t tmpfs -o "mode=0755,size=$((NODES * 1536 + 512))m" famfs-cluster-nodes "$DIR/nodes"
  CLUSTER_ID="famfs-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "$CLUSTER_ID" >"$DIR/id"
  local subnet; subnet=$(pick_subnet)
  echo "$subnet" >"$DIR/subnet"

  # The control plane needs nothing of the images or the nodes: it starts while they are built and staged.
  say "control plane (starting in the background; log $DIR/control-plane.log)"
  K8S_CONTROLLER_MANAGER=1 K8S_SCHEDULER=1 K8S_BIN="$BIN" \
    K8S_CM_CONTROLLERS='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    K8S_APISERVER_ARGS="--kubelet-preferred-address-types=Hostname,InternalIP --kubelet-client-certificate=$DIR/control/pki/admin.crt --kubelet-client-key=$DIR/control/pki/admin.key" \
    "$ROOT/scripts/k8s-cluster.sh" start "$DIR/control" >"$DIR/control-plane.log" 2>&1 </dev/null &
  local control=$!
  # A failure before the control plane is up waits for its start to end, so `down` finds what it started.
  fail() { wait "$control" 2>/dev/null || true; die "$@"; }
  if [ -z "${FAMFS_CLUSTER_NO_BUILD:-}" ]; then
    "$ROOT/scripts/cluster-images.sh" all >"$DIR/images.txt" || fail "building the images failed"
  else
    "$ROOT/scripts/cluster-images.sh" famfs pause busybox >"$DIR/images.txt" || fail "building the images failed"
  fi
  phase images
  PAUSE_IMAGE=$(awk '/pause/ {print $2}' "$DIR/images.txt")
  FAMFS_IMAGE=$(awk 'NR==1 {print $2}' "$DIR/images.txt")
  FAMFS_IMAGE_NEXT="${FAMFS_IMAGE%:*}:next"
  ( stage_images ) || fail "importing the images failed"
  phase import

  wait "$control" || { cat "$DIR/control-plane.log" >&2; die "the control plane did not start"; }
  cat "$DIR/control-plane.log" >&2
  local api; api=$(sed -n 's/^export FAMFS_K8S_API=https:\/\///p' "$DIR/control/env")
  # Only what was left to wait for: it started with the images.
  phase control-plane

  local device="/dev/shm/$CLUSTER_ID.img"
  echo "$device" >"$DIR/device"
  local names=() i
  for i in $(seq 1 "$NODES"); do names+=("$subnet.$((i + 1))"); done
  say "nodes: ${names[*]}"
  for i in $(seq 1 "$NODES"); do
    # The first node may host the controller (the famfs master); every node is attached to the memory.
    local labels="famfs.csi.cxl.io/attached=true"
    [ "$i" = 1 ] && labels="$labels,famfs.csi.cxl.io/master-capable=true"
    start_node "${names[$((i - 1))]}" "$i" "$labels"
  done
  # One famfs on the shared device, formatted by the first node's identity (the controller runs there).
  FAMFS_SYSTEM_UUID="$(cat "$DIR/nodes/${names[0]}/opt-famfs/system_uuid")" node "$ROOT/dist/cmd/famfs.js" mkfs --size 2G "$device" >&2
  say "waiting for ${#names[@]} node(s) to be Ready"
  local deadline=$((SECONDS + 180))
  until [ "$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True)" = "$NODES" ]; do
    [ $SECONDS -lt $deadline ] || { kubectl get nodes -o wide >&2 || true; tail -n 30 "$DIR/nodes/${names[0]}/kubelet.log" >&2; die "nodes not Ready after 180 s"; }
    for n in "${names[@]}"; do kill -0 "$(cat "$DIR/nodes/$n/holder.pid")" 2>/dev/null || { tail -n 30 "$DIR/nodes/$n/kubelet.log" "$DIR/nodes/$n/node.log" >&2; die "node $n died"; }; done
    sleep 0.2
  done

  phase nodes
  say "helm install $RELEASE charts/famfs-csi"
  helm install "$RELEASE" "$ROOT/charts/famfs-csi" --namespace "$NAMESPACE" --create-namespace \
    --set hostNetwork=true --set "kubeApiServer=$api" \
    --set "kubeletDir=$DIR/mnt/kubelet" --set "pool.stateDir=$DIR/mnt/state" \
    --set "pool.device=$device" --set "pool.name=$POOL" \
    --set controller.replicas=1 \
    --set "image.famfs.repository=${FAMFS_IMAGE%:*}" --set "image.famfs.tag=${FAMFS_IMAGE##*:}" >&2
  kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE-controller" --timeout=180s >&2 ||
    { kubectl -n "$NAMESPACE" get pods -o wide >&2; die "controller not ready"; }
  kubectl -n "$NAMESPACE" rollout status "daemonset/$RELEASE-node" --timeout=180s >&2 ||
    { kubectl -n "$NAMESPACE" get pods -o wide >&2; die "node plugins not ready"; }
  # Ready means registered: every node's CSINode lists the driver (the plugin registered itself with the kubelet).
  deadline=$((SECONDS + 120))
  until [ "$(kubectl get csinode -o jsonpath='{range .items[*]}{.spec.drivers[*].name}{"\n"}{end}' 2>/dev/null | grep -c famfs.csi.cxl.io)" = "$NODES" ]; do
    [ $SECONDS -lt $deadline ] || { kubectl -n "$NAMESPACE" get pods -o wide >&2; kubectl get csinode -o yaml >&2; die "the node plugins did not register with every kubelet"; }
    sleep 0.2
  done
  kubectl -n "$NAMESPACE" wait pod --all --for=condition=Ready --timeout=120s >&2 ||
    { kubectl -n "$NAMESPACE" get pods -o wide >&2; die "chart pods not Ready"; }

  phase install
  local joined; joined=$(printf '%s, ' "${times[@]}"); echo "${joined%, }" >"$DIR/times"
  cat >"$DIR/env" <<EOF
export KUBECONFIG=$DIR/control/kubeconfig
export FAMFS_DEVICE=$device
EOF
  say "up in $((SECONDS - t0)) s: $(cat "$DIR/times")"
  cat <<EOF
famfs-csi runs on ${#names[@]} node(s): ${names[*]}
  export KUBECONFIG=$DIR/control/kubeconfig
  export FAMFS_DEVICE=$device          # the shared memory stand-in all nodes see
Try:
  kubectl get pods -A -o wide
  kubectl describe famfspool $POOL
  node dist/cmd/famfs.js ls \$FAMFS_DEVICE
(these lines are in $DIR/env; stop with: npm run cluster -- down${DIR_ARG:+ --dir $DIR})
EOF
}

# --- down ---------------------------------------------------------------------------------------------
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

kill_pidfile() {
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$f"
}

# Every process in a cgroup subtree (all hierarchies list the same tasks; pids is enough).
cgroup_pids() {
  local cg="$1" h
  for h in pids freezer memory; do
    if [ -d "/sys/fs/cgroup/$h$cg" ]; then find "/sys/fs/cgroup/$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -u
}

remove_cgroups() {
  local cg="$1" h
  for h in "${CGROUP_HIERARCHIES[@]}"; do
    [ -d "/sys/fs/cgroup/$h$cg" ] || continue
    find "/sys/fs/cgroup/$h$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

down() {
  [ -d "$DIR" ] || { say "$DIR: no cluster"; return 0; }
  DIR="$(cd "$DIR" && pwd)"
  local id; id=$(cat "$DIR/id" 2>/dev/null || true)
  local n
  for n in "$DIR"/nodes/*/; do
    [ -d "$n" ] || continue
    kill_pidfile "$n/kubelet.pid"
  done
  # Containers (and whatever they started), shims, containerd, then the namespace holders.
  if [ -n "$id" ]; then
    local idx pids
    for idx in $(seq 1 8); do
      for _ in 1 2 3; do
        pids=$(cgroup_pids "/$id-$idx")
        [ -z "$pids" ] && break
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
      done
    done
  fi
  local pid
  for pid in $(pgrep -f -- "-address $DIR/nodes/" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
  for n in "$DIR"/nodes/*/; do
    [ -d "$n" ] || continue
    kill_pidfile "$n/containerd.pid"
    kill_pidfile "$n/holder.pid"
  done
  # Wait for the processes to be gone (their mounts and namespaces go with them).
  for _ in $(seq 1 50); do
    [ -z "$(pgrep -f -- "$DIR/nodes/" 2>/dev/null || true)" ] && break
    sleep 0.1
  done
  if [ -n "$id" ]; then for idx in $(seq 1 8); do remove_cgroups "/$id-$idx"; done; fi
  # The nodes' tmpfs (up): its processes are gone, so nothing holds it (lazily detached if something still does).
  if mountpoint -q "$DIR/nodes"; then umount "$DIR/nodes" 2>/dev/null || umount -l "$DIR/nodes"; fi
  if [ -f "$DIR/control/apiserver.pid" ]; then "$ROOT/scripts/k8s-cluster.sh" stop "$DIR/control" >&2; fi
  if [ -f "$DIR/device" ]; then rm -f "$(cat "$DIR/device")"; fi
  if grep -q " $DIR/" /proc/self/mountinfo; then
    die "mounts under $DIR remain on the host: $(grep " $DIR/" /proc/self/mountinfo | awk '{print $5}' | tr '\n' ' ')"
  fi
  rm -rf --one-file-system "$DIR"
  say "down: $DIR removed"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  __node)
    DIR="$1"; NODE="$2"
    node_run
    exit 0 ;;
esac
NODES=2
DIR="$ROOT/.cache/cluster"
DIR_ARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="${2:?--nodes N}"; shift 2 ;;
    --nodes=*) NODES="${1#--nodes=}"; shift ;;
    --dir) DIR="${2:?--dir DIR}"; DIR_ARG=1; shift 2 ;;
    --dir=*) DIR="${1#--dir=}"; DIR_ARG=1; shift ;;
    *) usage ;;
  esac
done
case "$cmd" in
  up) mkdir -p "$DIR"; up ;;
  down) down ;;
  env) [ -f "$DIR/env" ] || die "no cluster in $DIR (npm run cluster -- up)"; cat "$DIR/env" ;;
  *) usage ;;
esac
