#!/usr/bin/env node
// Makes the package's commands (package.json "bin": famfs, famfs-csi, famfs-fused) runnable by name.
//
//   node scripts/link-bins.js --chmod-only   give dist/cmd/*.js their run bit (npm run build does this:
//                                            tsc writes plain 0644 files)
//   node scripts/link-bins.js                also symlink each command into BIN_DIR, as `npm link` does:
//                                            BIN_DIR is $FAMFS_BIN_DIR, else <npm global prefix>/bin
//                                            (/usr/bin or /usr/local/bin, already on PATH). npm install runs
//                                            this, so the README's `famfs ...` commands work as written.
//
// `npx famfs` is NOT an alternative: npm exec does not look at the project's own "bin" and would
// look for (and download) a registry package called "famfs" instead.
//
// A file in BIN_DIR that is not a symlink to some famfs-csi checkout's dist/cmd is never replaced.
// FAMFS_LINK_BINS=0 skips the linking (CI images, packagers).
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const bins = Object.entries(pkg.bin || {});

for (const [, rel] of bins) {
  const file = path.join(root, rel);
  if (fs.existsSync(file)) fs.chmodSync(file, fs.statSync(file).mode | 0o111);
}
if (process.argv.includes('--chmod-only')) process.exit(0);
if (process.env.FAMFS_LINK_BINS === '0') {
  console.error('[famfs-csi] FAMFS_LINK_BINS=0: commands not linked; run them as node dist/cmd/<name>.js');
  process.exit(0);
}

function globalBinDir() {
  const prefix = process.env.npm_config_global_prefix || process.env.npm_config_prefix || path.dirname(path.dirname(process.execPath));
  return path.join(prefix, 'bin');
}

const binDir = process.env.FAMFS_BIN_DIR || globalBinDir();
const linked = [];
for (const [name, rel] of bins) {
  const target = path.join(root, rel);
  const link = path.join(binDir, name);
  let current;
  try {
    current = fs.lstatSync(link);
  } catch {
    current = undefined;
  }
  if (current && !(current.isSymbolicLink() && /dist\/cmd\/[^/]+\.js$/.test(fs.readlinkSync(link)))) {
    console.error(`[famfs-csi] ${link} exists and is not a famfs-csi link: left alone; run node ${target} instead`);
    continue;
  }
  try {
    fs.mkdirSync(binDir, { recursive: true });
    if (current) fs.unlinkSync(link);
    fs.symlinkSync(target, link);
    linked.push(name);
  } catch (e) {
    console.error(`[famfs-csi] could not link ${link} (${e.code || e.message}); run node ${target}, or set FAMFS_BIN_DIR to a directory on your PATH`);
  }
}
if (linked.length > 0) console.error(`[famfs-csi] ${linked.join(', ')} linked into ${binDir}`);
