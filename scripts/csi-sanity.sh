#!/usr/bin/env bash
# Runs csi-sanity v5.4.0 against famfs-csi --mode all on a fresh emulated device and prints
# passed / failed / skipped. Exits non-zero unless every spec that is not skipped for an
# unadvertised capability passes. Needs root and /dev/fuse; Go for the first csi-sanity build.
#
#   scripts/csi-sanity.sh                              # everything
#   scripts/csi-sanity.sh --ginkgo.focus='Node Service'  # extra csi-sanity/ginkgo arguments
#   CSI_SANITY_KEEP=1 scripts/csi-sanity.sh            # keep the temp dir (driver log, junit, output)
#
# The work is done by test/csi-sanity.test.ts (one implementation for CI and humans); this script
# builds what it needs and runs that test alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/tools.sh" csi-sanity
npx tsc -p .
export CSI_SANITY_ARGS="${CSI_SANITY_ARGS:-} $*"
exec npx mocha --no-config --timeout 1800000 --enable-source-maps dist/test/csi-sanity.test.js
