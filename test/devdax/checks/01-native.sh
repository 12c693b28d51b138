# The native device layer (pkg/device) on the real devdax: see test/devdax/guest/native-checks.ts.
. "$PROJ/test/devdax/guest/lib.sh"
if ! have_js test/devdax/guest/native-checks.js || [ ! -f "$DIST/../build/Release/famfs_native.node" ]; then
  result native fail "dist/test/devdax/guest/native-checks.js or the addon is missing: build first (npm run build)"
  exit 1
fi
node "$DIST/test/devdax/guest/native-checks.js"
