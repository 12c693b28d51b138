#!/usr/bin/env bash
# Container images for the local cluster (scripts/cluster.sh), built here without a registry or a
# container engine, as OCI image archives in .cache/images/ that `ctr images import` takes:
#
#   famfs-csi   the project's Dockerfile, runtime stage, instruction by instruction: its base
#               (node:20-bookworm-slim) is a Debian bookworm root file system from debootstrap (cached)
#               plus this machine's Node.js; RUN runs in a chroot of it; COPY --from=build takes the
#               build stage's outputs from this checkout (npm run build, the native addon, production
#               node_modules). Any other instruction in that stage is refused, so the Dockerfile stays
#               the one description of the image.
#   pause       a static program that sleeps until SIGTERM (containerd's sandbox_image).
#   busybox     Debian's busybox-static, for the test pods.
#   sidecars    csi-provisioner, csi-attacher, csi-snapshotter: the static Go binaries scripts/k8s-tools.sh builds.
#
# Usage: scripts/cluster-images.sh [all|famfs|pause|busybox|sidecars]...   prints one line per archive:
#   <archive path> <image name>
# The image names are the chart's defaults (values.yaml), so the chart needs no image overrides.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
OUT="$CACHE/images"
BIN="${K8S_BIN:-$CACHE/tools/bin}"
LOGS="$CACHE/logs"
mkdir -p "$OUT" "$LOGS" "$CACHE/locks"

DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf '[cluster-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# chart_value PATH: a value of charts/famfs-csi/values.yaml (image names and tags).
chart_value() {
  node -e '
    const y = require(process.argv[1] + "/node_modules/yaml");
    const fs = require("fs");
    let v = y.parse(fs.readFileSync(process.argv[1] + "/charts/famfs-csi/values.yaml", "utf8"));
    for (const k of process.argv[2].split(".")) v = v[k];
    process.stdout.write(String(v));' "$ROOT" "$1"
}
chart_app_version() { sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/famfs-csi/Chart.yaml"; }

FAMFS_IMAGE="${FAMFS_IMAGE:-$(chart_value image.famfs.repository):$(chart_app_version)}"
PAUSE_IMAGE="${PAUSE_IMAGE:-famfs-csi.local/pause:1}"
BUSYBOX_IMAGE="${BUSYBOX_IMAGE:-famfs-csi.local/busybox:1}"


# with_lock NAME CMD...: one builder of NAME at a time (engineers and test runs share .cache).
with_lock() {
  local name="$1"; shift
  local fd
  exec {fd}>"$CACHE/locks/image-$name.lock"
  flock "$fd"
  "$@"
  local rc=$?
  exec {fd}>&-
  return $rc
}

# oci_archive ROOTFS NAME CONFIG_JSON OUT: one uncompressed layer holding ROOTFS, an image config with
# CONFIG_JSON as its "config" (Env, Entrypoint, WorkingDir...), written as an OCI image layout in a tar.
oci_archive() {
  local rootfs="$1" name="$2" config="$3" out="$4"
  local work; work=$(mktemp -d "$OUT/.oci-XXXXXX")
  layer_tar "$rootfs" "$work/layer.tar"
  oci_layers "$name" "$config" "$out" "$work/layer.tar"
  rm -rf "$work"
}

# layer_tar DIR TAR: DIR as a deterministic layer (same files, same digest: re-imports are no-ops for
# containerd). Overlay's own attributes of an upper directory are not part of a layer.
layer_tar() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --xattrs --xattrs-exclude='trusted.overlay.*' -C "$1" -cf "$2" .
}

# oci_layers NAME CONFIG_JSON OUT LAYER_TAR...: an OCI image archive whose layers are the given tars, bottom
# first. A layer's digest is read from LAYER_TAR.sha256 when that file exists (a cached layer is hashed once).
oci_layers() {
  local name="$1" config="$2" out="$3"; shift 3
  local work; work=$(mktemp -d "$OUT/.oci-XXXXXX")
  mkdir -p "$work/blobs/sha256"
  node -e '
    const fs = require("fs"), crypto = require("crypto"), path = require("path");
    const [work, name, configJson, ...layers] = process.argv.slice(1);
    const blob = (buf) => { const d = crypto.createHash("sha256").update(buf).digest("hex");
      fs.writeFileSync(path.join(work, "blobs/sha256", d), buf); return { digest: "sha256:" + d, size: buf.length }; };
    const fileDigest = (f) => { const h = crypto.createHash("sha256"); const fd = fs.openSync(f, "r");
      const b = Buffer.alloc(1 << 20); let n; while ((n = fs.readSync(fd, b, 0, b.length, null)) > 0) h.update(b.subarray(0, n)); fs.closeSync(fd); return h.digest("hex"); };
    const descs = layers.map((f) => {
      const cached = f + ".sha256";
      const d = fs.existsSync(cached) ? fs.readFileSync(cached, "utf8").trim() : fileDigest(f);
      // A hard link: the cached base layer is not copied for every image (same file system).
      const dst = path.join(work, "blobs/sha256", d);
      if (!fs.existsSync(dst)) { try { fs.linkSync(f, dst); } catch { fs.copyFileSync(f, dst); } }
      return { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: "sha256:" + d, size: fs.statSync(f).size };
    });
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: JSON.parse(configJson),
      rootfs: { type: "layers", diff_ids: descs.map((l) => l.digest) }, history: descs.map(() => ({ created_by: "scripts/cluster-images.sh" })) }));
    const c = blob(config);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...c }, layers: descs }));
    const m = blob(manifest);
    fs.writeFileSync(path.join(work, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...m,
      annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.replace(/^.*:/, "") } }] }));
    fs.writeFileSync(path.join(work, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  ' "$work" "$name" "$config" "$@"
  tar -C "$work" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# --- base root file system (debootstrap, cached) ------------------------------------------------------
base_rootfs() {
  local dir="$OUT/base-$DEBIAN_SUITE"
  if [ -f "$dir/.complete" ]; then echo "$dir"; return 0; fi
  "$ROOT/scripts/deps.sh" cluster
  rm -rf "$dir"
  say "debootstrap $DEBIAN_SUITE (minbase) from $DEBIAN_MIRROR (cached in ${dir#"$ROOT"/}; log $LOGS/cluster-debootstrap.log)"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >"$LOGS/cluster-debootstrap.log" 2>&1 ||
    { tail -n 20 "$LOGS/cluster-debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
  rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
  touch "$dir/.complete"
  echo "$dir"
}

# --- famfs-csi: the Dockerfile's runtime stage -----------------------------------------------------------
# build_stage DIR: what the Dockerfile's build stage leaves in /src, made from this checkout (main's famfs
# target ran npm run build and the addon build just before: their outputs are what famfs_inputs_key hashed).
build_stage() {
  local src="$1"
  rm -rf "$src"; mkdir -p "$src/build/Release" "$src/dist"
  cp "$ROOT/package.json" "$ROOT/package-lock.json" "$src/"
  cp -a "$ROOT/proto" "$src/proto"
  cp -a "$ROOT/dist/cmd" "$ROOT/dist/pkg" "$src/dist/"
  cp "$ROOT/build/Release/famfs_native.node" "$src/build/Release/"
  # npm prune --omit=dev on a copy: the image carries production dependencies only.
  cp -a "$(readlink -f "$ROOT/node_modules")" "$src/node_modules"
  (cd "$src" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --offline >/dev/null 2>&1) || die "npm prune --omit=dev failed in $src"
}

# The stand-in for node:<NODE_VERSION>-bookworm-slim: Debian bookworm with this machine's node.
runtime_base() {
  local base; base=$(base_rootfs)
  local node_bin; node_bin=$(readlink -f "$(command -v node)")
  local key; key=$(printf '%s\n%s\n' "$(sha256sum "$node_bin" | cut -d' ' -f1)" "$(cat "$base/.complete" 2>/dev/null; stat -c %Y "$base/.complete")" | sha256sum | cut -c1-16)
  local dir="$OUT/runtime-base-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$OUT"/runtime-base-*
    cp -a "$base" "$dir.tmp"
    install -m 0755 "$node_bin" "$dir.tmp/usr/local/bin/node"
    rm -f "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# dockerfile_runtime_steps: the runtime stage's instructions, one per line (continuations joined).
dockerfile_runtime_steps() {
  awk '
    { line = $0 }
    /^[[:space:]]*#/ && !cont { next }
    {
      if (cont) buf = buf " " line; else buf = line
      if (buf ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", buf); cont = 1; next }
      cont = 0
      if (buf ~ /^[[:space:]]*$/) next
      if (buf ~ /^FROM .* AS runtime/) { inrt = 1; next }
      else if (buf ~ /^FROM /) { inrt = 0 }
      if (inrt) print buf
    }' "$ROOT/Dockerfile"
}

# run_in_root ROOTFS CMD: a Dockerfile RUN, in a chroot with /proc, /dev and /sys, in a private mount
# namespace (nothing stays mounted if this dies) and the host network (apt-get reaches the mirror).
run_in_root() {
  local rootfs="$1" cmd="$2" workdir="$3"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  unshare --mount --propagation private -- /bin/sh -c '
    set -e
    r="$1"; shift
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --rbind /sys "$r/sys"
    exec chroot "$r" /bin/sh -c "cd \"$2\" && $1"' run-in-root "$rootfs" "$cmd" "$workdir"
}

# run_in_overlay LOWER UPPER CMD WORKDIR: a Dockerfile RUN after the first COPY, in a chroot of an overlay
# of UPPER (the image's top layer so far) on LOWER (the cached layers below it), mounted in a private
# mount namespace: what the RUN changes lands in UPPER, the top layer.
run_in_overlay() {
  local lower="$1" upper="$2" cmd="$3" workdir="$4" w rc=0
  w=$(mktemp -d "$OUT/.overlay-XXXXXX")
  mkdir -p "$w/work" "$w/merged"
  unshare --mount --propagation private -- /bin/sh -c '
    set -e
    lower="$1" upper="$2" w="$3"; shift 3
    r="$w/merged"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$w/work" "$r"
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --rbind /sys "$r/sys"
    exec chroot "$r" /bin/sh -c "cd \"$2\" && $1"' run-in-overlay "$lower" "$upper" "$w" "$cmd" "$workdir" || rc=$?
  rm -rf "$w"
  return $rc
}

# base_layer DIR: DIR's layer tar, made once (DIR.layer.tar, its digest in DIR.layer.tar.sha256): the
# cached layers below the first COPY are the same for every build of the image.
base_layer() {
  local dir="$1" t="$1.layer.tar"
  if [ ! -f "$t" ] || [ ! -f "$t.sha256" ]; then
    rm -f "$t" "$t.sha256" "$t.tmp"
    # Neither the build's marker nor the resolv.conf a RUN needed for the mirror is part of the image.
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --xattrs --exclude=./.complete --exclude=./etc/resolv.conf \
      -C "$dir" -cf "$t.tmp" .
    sha256sum "$t.tmp" | cut -d' ' -f1 >"$t.sha256"
    mv "$t.tmp" "$t"
  fi
  echo "$t"
}

build_famfs() {
  # Two layers, as a container engine would make them: everything up to the first COPY (cached, its tar
  # and digest made once), and what the COPY and later steps add (rootfs: the top layer's directory).
  local stage="$OUT/famfs-build-stage" rootfs="$OUT/famfs-app-layer" out="$OUT/famfs-csi.oci.tar"
  local log="$LOGS/cluster-image-famfs.log"
  local base; base=$(runtime_base)
  say "famfs-csi image from the Dockerfile's runtime stage (log ${log#"$ROOT"/})"
  build_stage "$stage"
  : >"$log"
  local workdir=/ env_json='[]' entrypoint='null' cached="$base" key
  key=$(basename "$base")
  local copied=0
  rm -rf "$rootfs"
  while IFS= read -r step; do
    local instr="${step%% *}" args="${step#* }"
    echo ">>> $step" >>"$log"
    case "$instr" in
      RUN)
        if [ $copied -eq 0 ]; then
          # RUN steps before the first COPY depend only on the base: cache their result.
          key=$(printf '%s\n%s\n' "$key" "$args" | sha256sum | cut -c1-16)
          if [ -f "$OUT/famfs-layer-$key/.complete" ]; then cached="$OUT/famfs-layer-$key"; echo "(cached)" >>"$log"; continue; fi
          rm -rf "$OUT"/famfs-layer-*.tmp
          cp -a "$cached" "$OUT/famfs-layer-$key.tmp"
          run_in_root "$OUT/famfs-layer-$key.tmp" "$args" "$workdir" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "RUN failed: $args"; }
          rm -f "$OUT/famfs-layer-$key.tmp/.complete"
          mv "$OUT/famfs-layer-$key.tmp" "$OUT/famfs-layer-$key"
          touch "$OUT/famfs-layer-$key/.complete"
          cached="$OUT/famfs-layer-$key"
        else
          run_in_overlay "$cached" "$rootfs" "$args" "$workdir" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "RUN failed: $args"; }
        fi ;;
      WORKDIR)
        workdir="$args"
        [ $copied -eq 1 ] && mkdir -p "$rootfs$workdir" ;;
      COPY)
        if [ $copied -eq 0 ]; then
          mkdir -p "$rootfs$workdir"; copied=1
        fi
        # COPY --from=build /src/<path> <dest>: dest relative to WORKDIR.
        set -- $args
        [ "$1" = "--from=build" ] || die "Dockerfile runtime stage: only COPY --from=build is supported here: $step"
        local srcpath="${2#/src/}" dest="$3"
        [ "$srcpath" != "$2" ] || die "Dockerfile: COPY source $2 is not under /src: $step"
        case "$dest" in /*) ;; *) dest="$workdir/$dest" ;; esac
        [ -e "$stage/$srcpath" ] || die "Dockerfile copies /src/$srcpath, which this build does not produce"
        if [ -d "$stage/$srcpath" ]; then mkdir -p "$rootfs$dest"; cp -a "$stage/$srcpath/." "$rootfs$dest/"
        else case "$dest" in */) mkdir -p "$rootfs$dest"; cp -a "$stage/$srcpath" "$rootfs$dest" ;; *) mkdir -p "$(dirname "$rootfs$dest")"; cp -a "$stage/$srcpath" "$rootfs$dest" ;; esac
        fi ;;
      ENV)
        env_json=$(node -e 'const a=JSON.parse(process.argv[1]); const s=process.argv[2]; const i=s.indexOf("="); if(i<1) process.exit(2); a.push(s); console.log(JSON.stringify(a));' "$env_json" "$args") ||
          die "Dockerfile: ENV must be KEY=value: $step" ;;
      ENTRYPOINT)
        entrypoint="$args" ;;
      *) die "Dockerfile runtime stage: instruction $instr is not supported by scripts/cluster-images.sh: $step" ;;
    esac
  done < <(dockerfile_runtime_steps)
  [ $copied -eq 1 ] || die "Dockerfile runtime stage copied nothing from the build stage"
  # An overlay whiteout (a RUN after COPY removed a file of the layers below) would need an OCI whiteout.
  [ -z "$(find "$rootfs" -type c -print -quit)" ] || die "a RUN after the first COPY removed files of the layers below: not supported by scripts/cluster-images.sh"
  local config
  config=$(node -e '
    const env = JSON.parse(process.argv[1]);
    env.unshift("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    console.log(JSON.stringify({ Env: env, Entrypoint: JSON.parse(process.argv[2]), WorkingDir: process.argv[3] }));' "$env_json" "$entrypoint" "$workdir")
  local lower; lower=$(base_layer "$cached")
  layer_tar "$rootfs" "$OUT/famfs-app-layer.tar"
  oci_layers "$FAMFS_IMAGE" "$config" "$out" "$lower" "$OUT/famfs-app-layer.tar"
  # The bottom layer's digest names the cached layers a node's containerd may hold already (scripts/cluster.sh).
  cp "$lower.sha256" "$out.base"
  rm -rf "$rootfs" "$stage" "$OUT/famfs-app-layer.tar"
  say "famfs-csi image: $(du -h "$out" | cut -f1) $FAMFS_IMAGE"
}

# --- pause -------------------------------------------------------------------------------------------
build_pause() {
  local out="$OUT/pause.oci.tar"
  local src
  src=$(cat <<'EOF'
/* The pod sandbox's process: holds the pod's namespaces, sleeps, exits on SIGTERM/SIGINT. As the real
 * pause does, it reaps the zombies of a pod that shares one pid namespace (shareProcessNamespace: it is
 * that namespace's init, orphans become its children). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}
int main(void) {
  signal(SIGTERM, done);
  signal(SIGINT, done);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
EOF
)
  # Rebuilt when its source changes (the digest of the source it was built from is kept next to it).
  local key; key=$(printf '%s\n' "$src" | sha256sum | cut -c1-16)
  [ -f "$out" ] && [ "$(cat "$out.src" 2>/dev/null)" = "$key" ] && return 0
  local work; work=$(mktemp -d "$OUT/.pause-XXXXXX")
  printf '%s\n' "$src" >"$work/pause.c"
  mkdir -p "$work/rootfs"
  gcc -Os -static -o "$work/rootfs/pause" "$work/pause.c" || die "cannot compile the pause program (gcc, static libc)"
  strip "$work/rootfs/pause"
  oci_archive "$work/rootfs" "$PAUSE_IMAGE" '{"Entrypoint":["/pause"]}' "$out"
  echo "$key" >"$out.src"
  rm -rf "$work"
}

# --- busybox (test pods) -------------------------------------------------------------------------------
build_busybox() {
  local out="$OUT/busybox.oci.tar"
  [ -f "$out" ] && return 0
  "$ROOT/scripts/deps.sh" cluster
  local work; work=$(mktemp -d "$OUT/.busybox-XXXXXX")
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for a in $("$work/rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$work/rootfs/bin/$a"; done
  chmod 1777 "$work/rootfs/tmp"
  oci_archive "$work/rootfs" "$BUSYBOX_IMAGE" '{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh"]}' "$out"
  rm -rf "$work"
}

# --- CSI sidecars ---------------------------------------------------------------------------------------
build_sidecar() {
  local tool="$1" value="$2"
  local out="$OUT/$tool.oci.tar"
  local name; name="$(chart_value "image.$value.repository"):$(chart_value "image.$value.tag")"
  [ -x "$BIN/$tool" ] || "$ROOT/scripts/k8s-tools.sh" sidecars >&2 || die "cannot build $tool"
  if [ -f "$out" ] && [ "$out" -nt "$BIN/$tool" ]; then echo "$out $name"; return 0; fi
  local work; work=$(mktemp -d "$OUT/.$tool-XXXXXX")
  mkdir -p "$work/rootfs/tmp"
  cp "$BIN/$tool" "$work/rootfs/$tool"
  oci_archive "$work/rootfs" "$name" "{\"Entrypoint\":[\"/$tool\"]}" "$out"
  rm -rf "$work"
  echo "$out $name"
}

# famfs_inputs_key: a hash of everything the famfs-csi image is made of, and of how (content, not mtimes:
# npm run build rewrites dist/ every time).
famfs_inputs_key() {
  (cd "$ROOT" && find Dockerfile scripts/cluster-images.sh package.json package-lock.json dist/cmd dist/pkg proto build/Release/famfs_native.node \
    -type f ! -name '*.map' -print0 | sort -z | xargs -0 sha256sum; readlink -f "$(command -v node)") | sha256sum | cut -c1-32
}

famfs_fresh() {
  local out="$OUT/famfs-csi.oci.tar"
  [ -f "$out" ] && [ -f "$out.key" ] && [ "$(cat "$out.key")" = "$(famfs_inputs_key)" ]
}

# ts_build: npm run build, unless the output of every TypeScript source of cmd/ and pkg/ is newer than the
# source and the build configuration (npm test builds just before its tests: another tsc run costs ~10 s).
ts_build() {
  if (cd "$ROOT" && node -e '
    const fs = require("fs"), path = require("path");
    const mtime = (f) => { try { return fs.statSync(f).mtimeMs; } catch { return -1; } };
    const srcs = [];
    const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p); else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) srcs.push(p); } };
    walk("cmd"); walk("pkg");
    const config = Math.max(...["tsconfig.json", "package.json", "package-lock.json"].map(mtime));
    const stale = srcs.find((s) => { const o = mtime(path.join("dist", s.replace(/\.ts$/, ".js"))); return o < 0 || o < mtime(s) || o < config; });
    process.exit(stale === undefined ? 0 : 1);'); then
    return 0
  fi
  (cd "$ROOT" && npm run build >/dev/null) || die "npm run build failed"
}

main() {
  local targets=("$@")
  [ ${#targets[@]} -eq 0 ] && targets=(all)
  for t in "${targets[@]}"; do
    case "$t" in
      all) main famfs pause busybox sidecars ;;
      famfs)
        ts_build
        # Always asked (before the freshness key, which hashes the addon): native/build.js rebuilds only when a
        # source is newer than the addon, and a stale addon (a pull that changed native/) would put JS and
        # native code of two versions in one image.
        (cd "$ROOT" && node native/build.js) >&2 || die "native addon build failed"
        famfs_fresh || { with_lock famfs build_famfs && famfs_inputs_key >"$OUT/famfs-csi.oci.tar.key"; }
        echo "$OUT/famfs-csi.oci.tar $FAMFS_IMAGE" ;;
      pause) with_lock pause build_pause; echo "$OUT/pause.oci.tar $PAUSE_IMAGE" ;;
      busybox) with_lock busybox build_busybox; echo "$OUT/busybox.oci.tar $BUSYBOX_IMAGE" ;;
      sidecars)
        with_lock sidecars build_sidecar csi-provisioner csiProvisioner
        with_lock sidecars build_sidecar csi-attacher csiAttacher ;;
      *) die "unknown target $t" ;;
    esac
  done
}

main "$@"
