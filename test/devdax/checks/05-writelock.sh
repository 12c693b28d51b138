# The famfs writer lock on the real devdax char device: see test/devdax/guest/writelock-checks.ts (guest A).
. "$PROJ/test/devdax/guest/lib.sh"
if ! have_js test/devdax/guest/writelock-checks.js || ! have_js test/helpers/log-writer.js; then
  result writelock fail "dist/test/devdax/guest/writelock-checks.js or dist/test/helpers/log-writer.js is missing"; exit 1
fi
node "$DIST/test/devdax/guest/writelock-checks.js"
