# The CSI node path on the real devdax: see test/devdax/guest/csi-checks.ts.
. "$PROJ/test/devdax/guest/lib.sh"
if ! have_js cmd/famfs-csi.js || ! have_js test/devdax/guest/csi-checks.js; then
  result csi fail "dist/cmd/famfs-csi.js or dist/test/devdax/guest/csi-checks.js is missing"; exit 1
fi
node "$DIST/test/devdax/guest/csi-checks.js"
