#!/usr/bin/env node
// Builds the native addon with npm's bundled node-gyp. Node's headers come from the local
// installation (no download: the build machines have no route to nodejs.org).
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build', 'Release', 'famfs_native.node');
const force = process.argv.includes('--force');

// libfuse3 (headers + pkg-config) for the addon, python3 for node-gyp, make and g++. Whatever is
// missing is installed by scripts/deps.sh (the project's one list of Debian packages).
function buildDepsPresent() {
  try {
    execFileSync('pkg-config', ['--exists', 'fuse3']);
    for (const tool of ['python3', 'make', 'g++']) execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function ensureBuildDeps() {
  if (buildDepsPresent()) return;
  const deps = path.join(root, 'scripts', 'deps.sh');
  if (!fs.existsSync(deps)) {
    console.error('[famfs-csi] build dependencies missing. Install them: apt-get install libfuse3-dev fuse3 pkg-config python3 make g++');
    process.exit(1);
  }
  try {
    execFileSync('bash', [deps, 'build'], { stdio: 'inherit' });
  } catch {
    // deps.sh said what is missing and how to install it.
    process.exit(1);
  }
}

function nodeDir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function newestSource() {
  let newest = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  walk(path.join(root, 'native', 'src'));
  walk(path.join(root, 'native', 'bench'));
  walk(path.join(root, 'native', 'test'));
  newest = Math.max(newest, fs.statSync(path.join(root, 'binding.gyp')).mtimeMs);
  return newest;
}

if (!force && fs.existsSync(out) && fs.statSync(out).mtimeMs >= newestSource()) {
  process.exit(0);
}
ensureBuildDeps();
const gyp = require.resolve('node-gyp/bin/node-gyp.js', {
  paths: [path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules'), root],
});
const args = [gyp, 'rebuild', '-j', 'max'];
const dir = nodeDir();
if (dir) args.push(`--nodedir=${dir}`);
execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
