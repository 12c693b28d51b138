#!/usr/bin/env bash
# Builds the Go tools the tests and benches need and caches them in .cache/tools/bin (git-ignored).
#
#   scripts/tools.sh                 # build every tool that is missing
#   scripts/tools.sh csi-sanity      # build one tool (or several: scripts/tools.sh a b)
#   scripts/tools.sh --path csi-sanity   # print the binary path (builds it first if missing)
#   scripts/tools.sh --list          # list the tools this script knows
#
# A tool is rebuilt only when its binary is missing or its version stamp differs, so a CI cache of
# .cache/ (tools + Go module and build caches) turns every later run into a no-op.
#
# Adding a tool: write a function `tool_<name>` (dashes become underscores) that builds into "$BIN",
# and add <name> to TOOLS with its version in a VERSION_<name> variable. Tools whose go.mod carries
# replace directives need a wrapper module: see build_in_wrapper.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/tools/bin"
STAMPS="$CACHE/tools/stamps"

# Everything Go writes stays under .cache/go so CI can cache one folder.
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOBIN="$BIN"
export GOFLAGS="${GOFLAGS:--modcacherw}"
export CGO_ENABLED="${CGO_ENABLED:-0}"

VERSION_csi_sanity="v5.4.0"

TOOLS=(csi-sanity)

log() { printf '[tools] %s\n' "$*" >&2; }

# stamp_ok NAME VERSION: true when the binary exists and was built at VERSION.
stamp_ok() {
  [[ -x "$BIN/$1" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]
}

write_stamp() {
  mkdir -p "$STAMPS"
  printf '%s\n' "$2" >"$STAMPS/$1"
}

# build_in_wrapper NAME MODULE@VERSION PACKAGE [REPLACE_LINES]: for modules whose go.mod has replace
# directives (go install refuses them). Builds PACKAGE from a throwaway module that requires MODULE and
# repeats the replaces.
build_in_wrapper() {
  local name="$1" modver="$2" pkg="$3" replaces="${4:-}"
  local dir
  dir="$(mktemp -d "$CACHE/tools/wrap-$name.XXXXXX")"
  (
    cd "$dir"
    go mod init "famfs-csi.local/tools/$name" >/dev/null 2>&1
    if [[ -n "$replaces" ]]; then
      printf '%s\n' "$replaces" >>go.mod
    fi
    go get "$modver"
    go build -o "$BIN/$name" "$pkg"
  )
  rm -rf "$dir"
}

tool_csi_sanity() {
  go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$VERSION_csi_sanity"
}

build_tool() {
  local name="$1" fn ver_var ver
  fn="tool_${name//-/_}"
  ver_var="VERSION_${name//-/_}"
  if ! declare -F "$fn" >/dev/null; then
    log "unknown tool: $name (known: ${TOOLS[*]})"
    return 2
  fi
  ver="${!ver_var:-unversioned}"
  if stamp_ok "$name" "$ver"; then
    log "$name $ver: cached at $BIN/$name"
    return 0
  fi
  mkdir -p "$BIN"
  log "$name $ver: building (GOMODCACHE=$GOMODCACHE)"
  local t0=$SECONDS
  "$fn"
  [[ -x "$BIN/$name" ]] || { log "$name: build produced no $BIN/$name"; return 1; }
  write_stamp "$name" "$ver"
  log "$name $ver: built in $((SECONDS - t0)) s"
}

main() {
  if ! command -v go >/dev/null; then
    log "go is not installed; the Go tools cannot be built"
    return 1
  fi
  case "${1:-}" in
    --list) printf '%s\n' "${TOOLS[@]}"; return 0 ;;
    --path)
      shift
      build_tool "$1"
      printf '%s\n' "$BIN/$1"
      return 0 ;;
  esac
  local want=("$@")
  [[ ${#want[@]} -gt 0 ]] || want=("${TOOLS[@]}")
  for t in "${want[@]}"; do build_tool "$t"; done
}

main "$@"
