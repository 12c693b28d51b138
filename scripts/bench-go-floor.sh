#!/usr/bin/env bash
# Builds bench/csi/go-floor (a do-nothing CSI controller on the CSI spec's Go bindings and grpc-go)
# into .cache/tools/bin/csi-floor-go, from the Go module proxy, like scripts/tools.sh builds the test
# tools. bench/csi runs it as the reference stack's floor. Prints the binary's path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/tools/bin"
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS="${GOFLAGS:--modcacherw}" CGO_ENABLED=0
SPEC_VERSION="v1.12.0"
GRPC_VERSION="v1.72.1"
STAMP="$CACHE/tools/stamps/csi-floor-go"
WANT="$SPEC_VERSION $GRPC_VERSION $(sha256sum "$ROOT/bench/csi/go-floor/main.go" | cut -c1-16)"
if [[ -x "$BIN/csi-floor-go" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "$BIN/csi-floor-go"
  exit 0
fi
command -v go >/dev/null || { echo "bench-go-floor: Go is not installed (scripts/tools.sh needs it too)" >&2; exit 1; }
mkdir -p "$BIN" "$(dirname "$STAMP")"
dir="$(mktemp -d "$CACHE/tools/wrap-csi-floor-go.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
cp "$ROOT/bench/csi/go-floor/main.go" "$dir/"
(
  cd "$dir"
  go mod init famfs-csi.local/bench/csi-floor-go >/dev/null 2>&1
  go get "github.com/container-storage-interface/spec@$SPEC_VERSION" "google.golang.org/grpc@$GRPC_VERSION" >&2
  go mod tidy >&2
  go build -trimpath -o "$BIN/csi-floor-go" . >&2
)
printf '%s\n' "$WANT" >"$STAMP"
echo "$BIN/csi-floor-go"
